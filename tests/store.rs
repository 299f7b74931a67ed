//! The run store's semantics, one suite run against both backends: a SQLite
//! file and a private PostgreSQL server (tests/support/postgres.rs).
//! Leases are exclusive, expire, can be taken over, and fence every write of
//! the process that lost them; checkpoints, replies, intents and gates read
//! back what was written; a gate's source, policy record, announcements
//! and escalation are claimed once; review samples keep their daily cap.

use crate::support;

use std::time::Duration;

use flowc::run::budget::Spend;
use flowc::store::{
    self, Acquired, DecisionSource, Durability, GateRecord, Lease, NoticeStage, Reply,
    ReviewRecord, RunEnd, RunRecord, StepRow, Store, StoreError, Verdict,
};
use serde_json::json;

/// Both backends, each a fresh store.
fn backends(name: &str) -> Vec<(&'static str, Store, Option<std::path::PathBuf>)> {
    located(name)
        .into_iter()
        .map(|(backend, store, dir, _)| (backend, store, dir))
        .collect()
}

/// [`backends`], with what each store was opened from (a file or a URL).
fn located(
    name: &str,
) -> Vec<(
    &'static str,
    Store,
    Option<std::path::PathBuf>,
    std::path::PathBuf,
)> {
    let dir = std::env::temp_dir().join(format!(
        "flowc-store-{name}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let file = dir.join("runs.db");
    let sqlite = Store::open(&file, Durability::Normal).expect("opens SQLite");
    let url = std::path::PathBuf::from(support::postgres::database(name));
    let pg = Store::open(&url, Durability::Full).expect("opens PostgreSQL");
    vec![
        ("sqlite", sqlite, Some(dir), file),
        ("postgres", pg, None, url),
    ]
}

fn record(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        file: "prog.flow".into(),
        flow: "main".into(),
        program: json!({"main": "abc"}),
        input: json!({"q": 1}),
        status: "running".into(),
        output: None,
        error: None,
        created_at: store::now(),
        updated_at: store::now(),
        spend: Spend::default(),
        trace: "trace.jsonl".into(),
        replay: None,
        owner: None,
        lease_until: None,
        // Above 2^52, as a trace's per-process span prefix makes them.
        root_span: Some((1 << 52) + 7),
        root_written: false,
    }
}

/// A lease held by a process on another machine (so nobody can tell it is
/// dead: only its expiry frees the run).
fn remote_lease(run: &str, ttl: Duration) -> Lease {
    Lease {
        run_id: run.into(),
        owner: "elsewhere/1/00000001".into(),
        epoch: 1,
        ttl,
    }
}

/// A completed step as a commit writes it.
fn row(key: &str, value: Option<serde_json::Value>) -> StepRow {
    StepRow::new(key, value.as_ref())
}

fn reply(key: &str, attempt: u32, text: &str) -> Reply {
    Reply {
        key: key.into(),
        attempt,
        text: text.into(),
        input_tokens: 0,
        output_tokens: 0,
    }
}

fn spend(steps: u64) -> Spend {
    Spend {
        steps,
        tool_calls: steps,
        tokens: 10 * steps,
        cost: 0.5,
        wall: 1.5 * steps as f64,
    }
}

#[test]
fn a_live_lease_is_exclusive_an_expired_one_is_taken_over_and_the_old_owner_is_fenced() {
    for (backend, store, _dir) in backends("leases") {
        let old = remote_lease("r1", Duration::from_millis(300));
        store.create_run(&record("r1"), &old).expect("creates");
        // Live: refused, and the holder is named.
        match store.acquire("r1", "here/2/x", Duration::from_secs(30)) {
            Ok(Acquired::Held { owner, .. }) => assert_eq!(owner, old.owner, "{backend}"),
            _ => panic!("{backend}: a live lease was taken over"),
        }
        assert!(matches!(
            store.acquire("nope", "here/2/x", Duration::from_secs(30)),
            Ok(Acquired::Missing)
        ));
        // The holder's checkpoint that writes the run's row renews it.
        store
            .commit_steps(
                &old,
                &[row("a", Some(json!(1)))],
                &[],
                spend(1),
                Some(spend(1)),
            )
            .expect("the holder commits");
        std::thread::sleep(Duration::from_millis(450));
        let new = match store.acquire("r1", "here/2/x", Duration::from_secs(30)) {
            Ok(Acquired::Taken(r, lease)) => {
                assert_eq!(
                    r.spend.steps, 1,
                    "{backend}: the run was read with the lease"
                );
                assert_eq!(lease.epoch, 2, "{backend}");
                lease
            }
            _ => panic!("{backend}: an expired lease was not taken over"),
        };
        // Every write of the old owner is rejected, and changes nothing.
        let lost = |r: Result<(), StoreError>, what: &str| match r {
            Err(StoreError::LeaseLost(run)) => assert_eq!(run, "r1"),
            other => panic!("{backend}: the old owner's {what} was not fenced: {other:?}"),
        };
        lost(
            store.commit_steps(
                &old,
                &[row("b", Some(json!("stale")))],
                &[],
                spend(9),
                Some(spend(9)),
            ),
            "checkpoint",
        );
        // A checkpoint that leaves the run's row alone is fenced as well.
        lost(
            store.commit_steps(&old, &[row("c", Some(json!("stale")))], &[], spend(9), None),
            "checkpoint fenced by a read",
        );
        lost(store.intent(&old, "b", "idem-b"), "intent");
        lost(store.record_spend(&old, spend(9)), "spend");
        lost(
            store.commit_steps(&old, &[], &[reply("m", 1, "stale")], spend(9), None),
            "reply",
        );
        assert_eq!(store.reply("r1", "m", 1).expect("reply"), None, "{backend}");
        let gate = GateRecord::pending("r1", "g", "main", "g", json!([1]), None, "reject");
        lost(store.pending_gate(&old, &gate), "gate");
        lost(
            store.finish_run(
                &old,
                &RunEnd {
                    output: Some(&json!(0)),
                    root_written: true,
                    steps: &[StepRow::new("late", Some(&json!(1)))],
                    ..RunEnd::bare("completed", None, spend(9))
                },
            ),
            "finish",
        );
        let r = store.run("r1").expect("run").expect("exists");
        assert_eq!(r.root_span, Some((1 << 52) + 7), "{backend}");
        assert!(!r.root_written, "{backend}: a fenced finish wrote nothing");
        assert!(!store.renew(&old).expect("renew answers"), "{backend}");
        let steps = store.steps("r1").expect("steps");
        assert_eq!(steps.len(), 1, "{backend}: {steps:?}");
        assert!(store.reply("r1", "m", 1).expect("reply").is_none());
        assert!(store.intent_key("r1", "b").expect("intent").is_none());
        assert!(store.gate("r1", "g").expect("gate").is_none());
        // The new owner's writes go through; finishing releases the lease.
        assert!(store.renew(&new).expect("renew"), "{backend}");
        store
            .commit_steps(
                &new,
                &[row("b", Some(json!("fresh")))],
                &[],
                spend(2),
                Some(spend(2)),
            )
            .expect("the new owner commits");
        // A checkpoint without the spend leaves the run's row as it was.
        let before = store.run("r1").expect("run").expect("exists");
        store
            .commit_steps(&new, &[row("d", Some(json!("also")))], &[], spend(3), None)
            .expect("the new owner commits without the spend");
        let after = store.run("r1").expect("run").expect("exists");
        assert_eq!(after.spend, before.spend, "{backend}");
        // Its step rows carry the run's steps, tool calls and active time:
        // what a resume after a crash counts of them.
        let counted = store.step_texts("r1").expect("steps").counted();
        assert_eq!(
            counted.map(|c| (c.steps, c.tool_calls, c.wall)),
            Some((3, 3, 4.5)),
            "{backend}"
        );
        assert_eq!(after.updated_at, before.updated_at, "{backend}");
        assert_eq!(after.lease_until, before.lease_until, "{backend}");
        assert_eq!(
            store.steps("r1").expect("steps")["d"],
            Some(json!("also")),
            "{backend}"
        );
        store
            .finish_run(
                &new,
                &RunEnd {
                    output: Some(&json!({"ok": true})),
                    root_written: true,
                    steps: &[StepRow::new("last", Some(&json!("with the end")))],
                    ..RunEnd::bare("completed", None, spend(2))
                },
            )
            .expect("finishes");
        let steps = store.steps("r1").expect("steps");
        assert_eq!(
            steps.get("last"),
            Some(&Some(json!("with the end"))),
            "{backend}: the run's last steps are written with its end"
        );
        assert!(
            !steps.contains_key("late"),
            "{backend}: a finish fenced out wrote none of its steps"
        );
        let r = store.run("r1").expect("run").expect("exists");
        assert!(
            r.root_written,
            "{backend}: the root span was recorded written"
        );
        assert_eq!(r.root_span, Some((1 << 52) + 7), "{backend}");
        assert_eq!(r.status, "completed");
        assert_eq!(r.output, Some(json!({"ok": true})));
        assert_eq!(r.owner, None, "{backend}: finishing released the lease");
        assert_eq!(r.spend.steps, 2);
        match store.acquire("r1", "third/3/y", Duration::from_secs(30)) {
            Ok(Acquired::Taken(_, lease)) => assert_eq!(lease.epoch, 3),
            _ => panic!("{backend}: a released run could not be taken"),
        }
    }
}

/// `flowc resume` opens its second connection and reads the run's steps on
/// it on a thread of its own (`store::Prefetch`): it reads what the run's
/// own connection reads, and the connection is a working one (the
/// heartbeat renews the lease on it). A store it cannot open is an error
/// the caller gets, not a run without a heartbeat.
#[test]
fn a_prefetch_reads_the_steps_on_a_connection_of_its_own() {
    for (backend, store, _dir, locator) in located("prefetch") {
        let lease = Lease::new_run("r5");
        store.create_run(&record("r5"), &lease).expect("creates");
        store
            .commit_steps(
                &lease,
                &[
                    row("main.a", Some(json!({"n": 1}))),
                    row("x[1]/main.b", None),
                ],
                &[],
                spend(2),
                None,
            )
            .expect("commits");
        let durability = match backend {
            "sqlite" => Durability::Normal,
            _ => Durability::Full,
        };
        // A short lease, so the heartbeat renews it within the test.
        let beating = Lease {
            ttl: Duration::from_millis(150),
            ..lease.clone()
        };
        let before = store.run("r5").expect("reads").expect("has the run");
        let prefetch = store::Prefetch::start(locator, durability, beating);
        let (heartbeat, texts) = prefetch.heartbeat().expect("opens the store again");
        let texts = texts.wait(&store, "r5").expect("reads the steps");
        let own = store.step_texts("r5").expect("reads the steps");
        let rows = |t: &store::StepTexts| {
            (0..t.len())
                .map(|i| (t.key(i).to_vec(), t.value(i).map(<[u8]>::to_vec)))
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(texts.len(), 2, "{backend}");
        assert_eq!(rows(&texts), rows(&own), "{backend}");
        assert_eq!(
            texts.counted().map(|c| (c.steps, c.tool_calls, c.wall)),
            own.counted().map(|c| (c.steps, c.tool_calls, c.wall)),
            "{backend}"
        );
        // Then it renews the lease on its connection: the lease's end moves
        // (to 150 ms from a renewal, from 30 s after its creation).
        let renewed = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let now = store.run("r5").expect("reads").expect("has the run");
            now.lease_until != before.lease_until
        });
        assert!(renewed, "{backend}: the heartbeat never renewed the lease");
        assert!(!heartbeat.lost(), "{backend}");
        drop(heartbeat);
    }
    // A store under a file cannot be opened: the error comes back.
    let file = std::env::temp_dir().join(format!(
        "flowc-store-prefetch-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::write(&file, "not a directory").expect("writes");
    let prefetch = store::Prefetch::start(
        file.join("runs.db"),
        Durability::Normal,
        Lease::new_run("r5"),
    );
    assert!(matches!(prefetch.heartbeat(), Err(StoreError::Failed(_))));
    let _ = std::fs::remove_file(&file);
    // Opened but never told which run (its lease was not taken): the
    // thread stops without reading, and says so, rather than waiting on.
    for (backend, own, _dir, locator) in located("prefetch-unread") {
        let prefetch = store::Prefetch::open(locator, Durability::Normal);
        let (heartbeat, texts) = prefetch.heartbeat().expect("opens the store again");
        match texts.wait(&own, "r5") {
            Err(StoreError::Failed(why)) => {
                assert!(why.contains("never asked"), "{backend}: {why}")
            }
            other => panic!("{backend}: {:?}", other.map(|_| ())),
        }
        drop(heartbeat);
    }
}

/// A resume's two connections read the run's steps from both ends at once
/// (`store::ReadMeeting`): together they read every row once, whoever
/// reads how many, and the counts of the last commit.
#[test]
fn reads_from_both_ends_meet_and_read_every_step_once() {
    for (backend, store, _dir, locator) in located("meeting") {
        let lease = Lease::new_run("r6");
        store.create_run(&record("r6"), &lease).expect("creates");
        for batch in 0..20u64 {
            let steps: Vec<StepRow> = (0..25u64)
                .map(|i| {
                    let n = batch * 25 + i;
                    let value = (n % 7 != 0).then(|| json!({"n": n}));
                    StepRow::new(format!("items[{n}]/main.s{}", n % 3), value.as_ref())
                })
                .collect();
            store
                .commit_steps(&lease, &steps, &[], spend(batch + 1), None)
                .expect("commits");
        }
        let rows = |t: &store::StepTexts| {
            (0..t.len())
                .map(|i| (t.key(i).to_vec(), t.value(i).map(<[u8]>::to_vec)))
                .collect::<Vec<_>>()
        };
        let mut whole = rows(&store.step_texts("r6").expect("reads"));
        whole.sort();
        let second = Store::open(&locator, Durability::Normal).expect("opens again");
        // Down first, up first, and both at once.
        for order in 0..3 {
            let meeting = store::ReadMeeting::default();
            let (mut up, down) = match order {
                0 => {
                    meeting.join();
                    let down = second.step_texts_down("r6", &meeting).expect("reads down");
                    (store.step_texts_up("r6", &meeting).expect("reads up"), down)
                }
                1 => {
                    let up = store.step_texts_up("r6", &meeting).expect("reads up");
                    meeting.join();
                    (
                        up,
                        second.step_texts_down("r6", &meeting).expect("reads down"),
                    )
                }
                _ => std::thread::scope(|s| {
                    let third = Store::open(&locator, Durability::Normal).expect("opens again");
                    let meeting = &meeting;
                    let up = s.spawn(move || third.step_texts_up("r6", meeting));
                    meeting.join();
                    let down = second.step_texts_down("r6", meeting).expect("reads down");
                    (up.join().expect("joins").expect("reads up"), down)
                }),
            };
            up.append_down(down);
            let read = rows(&up);
            let mut sorted = read.clone();
            sorted.sort();
            assert_eq!(sorted, whole, "{backend} {order}");
            if backend == "sqlite" {
                // Read in key order from both ends (PostgreSQL reads its
                // rows in one go, in no order).
                assert_eq!(read, whole, "{backend} {order}: in key order");
            }
            let c = up.counted().expect("counted");
            assert_eq!((c.steps, c.tool_calls), (20, 20), "{backend} {order}");
        }
    }
}

#[test]
fn checkpoints_replies_intents_and_gates_read_back_what_was_written() {
    for (backend, store, _dir) in backends("roundtrip") {
        let lease = Lease::new_run("r2");
        store.create_run(&record("r2"), &lease).expect("creates");
        let r = store.run("r2").expect("run").expect("exists");
        assert_eq!(r.owner.as_deref(), Some(lease.owner.as_str()), "{backend}");
        assert_eq!(r.program, json!({"main": "abc"}));
        store
            .commit_steps(
                &lease,
                &[
                    row("x[0]/main.a", Some(json!({"big": "v".repeat(1000)}))),
                    row("main.skipped", None),
                ],
                &[],
                spend(2),
                Some(spend(2)),
            )
            .expect("commits a batch");
        let steps = store.steps("r2").expect("steps");
        assert_eq!(steps.len(), 2, "{backend}");
        assert_eq!(steps["main.skipped"], None);
        assert_eq!(steps["x[0]/main.a"], Some(json!({"big": "v".repeat(1000)})));
        store.intent(&lease, "main.post", "k1").expect("intent");
        store
            .intent(&lease, "main.post", "k2")
            .expect("a second intent is ignored");
        assert_eq!(
            store.intent_key("r2", "main.post").expect("intent"),
            Some("k1".into()),
            "{backend}: the first key stays"
        );
        // Replies go into a commit, with the spend that paid for them.
        let replies = [
            Reply {
                input_tokens: 12,
                output_tokens: 3,
                ..reply("main.m@fast", 1, "{\"a\":1}")
            },
            reply("main.m@fast", 2, "{\"a\":2}"),
        ];
        store
            .commit_steps(&lease, &[], &replies, spend(3), Some(spend(3)))
            .expect("replies");
        assert_eq!(
            store.reply("r2", "main.m@fast", 1).expect("reply"),
            Some(("{\"a\":1}".into(), 12, 3))
        );
        assert_eq!(
            store.reply("r2", "main.m@fast", 2).expect("reply"),
            Some(("{\"a\":2}".into(), 0, 0)),
            "{backend}"
        );
        assert_eq!(store.run("r2").unwrap().unwrap().spend.tokens, 30);
        assert_eq!(
            store.run("r2").unwrap().unwrap().spend.wall,
            4.5,
            "{backend}"
        );
        // A reservation recorded before a call (settled or not, it counts).
        store.record_spend(&lease, spend(4)).expect("spend");
        assert_eq!(
            store.run("r2").unwrap().unwrap().spend,
            spend(4),
            "{backend}"
        );
        store.record_spend(&lease, spend(3)).expect("spend");
        let gate = GateRecord::pending(
            "r2",
            "main.ok",
            "main",
            "ok",
            json!([{"n": 1}]),
            Some(store::now() + 60.0),
            "approve",
        );
        store.pending_gate(&lease, &gate).expect("gate");
        assert_eq!(store.gates(None).expect("gates").len(), 1, "{backend}");
        assert!(store
            .decide_gate("r2", "main.ok", true, Some(&json!({"n": 2})), None, "ana")
            .expect("decides"));
        assert!(
            !store
                .decide_gate("r2", "main.ok", false, None, Some("late"), "bo")
                .expect("decides"),
            "{backend}: a decided gate is not decided again"
        );
        let g = store.gate("r2", "main.ok").expect("gate").expect("exists");
        assert_eq!(g.status, "approved");
        assert_eq!(g.value, Some(json!({"n": 2})));
        assert_eq!(g.on_timeout, "approve");
        assert_eq!(g.decided_by.as_deref(), Some("ana"), "{backend}");
        assert_eq!(g.source, Some(DecisionSource::Person), "{backend}");
        assert!(g.decided_at.is_some_and(|t| t > 0.0), "{backend}");
        assert_eq!(store.runs().expect("runs").len(), 1);
        // Another connection sees the same store.
        let other = store.reopen().expect("reopens");
        assert_eq!(other.steps("r2").expect("steps").len(), 2, "{backend}");
    }
}

#[test]
fn policy_decisions_announcements_escalations_and_reviews_are_recorded_once() {
    for (backend, store, _dir) in backends("policy") {
        let lease = Lease::new_run("r3");
        store.create_run(&record("r3"), &lease).expect("creates");
        let pending = |key: &str| {
            GateRecord::pending(
                "r3",
                key,
                "main",
                "refund",
                json!([{"amount": 30}]),
                Some(store::now() - 1.0),
                "escalate",
            )
        };
        for key in ["a", "b", "c"] {
            store.pending_gate(&lease, &pending(key)).expect("gate");
        }
        // A policy's decision, with what it read.
        assert!(store
            .decide_gate_by_policy("r3", "a", &json!({"r.amount": 30}))
            .expect("decides"));
        assert!(
            !store
                .decide_gate_by_policy("r3", "a", &json!({}))
                .expect("answers"),
            "{backend}: decided once"
        );
        let a = store.gate("r3", "a").expect("gate").expect("exists");
        assert_eq!(a.status, "approved", "{backend}");
        assert_eq!(a.source, Some(DecisionSource::Policy), "{backend}");
        assert_eq!(a.decided_by.as_deref(), Some("policy"));
        assert_eq!(a.policy_read, Some(json!({"r.amount": 30})), "{backend}");
        assert!(
            !store
                .claim_notice("r3", "a", NoticeStage::Pending)
                .expect("answers"),
            "{backend}: a decided gate is not announced"
        );
        // Announcements: each stage once.
        assert!(store
            .claim_notice("r3", "b", NoticeStage::Pending)
            .expect("claims"));
        assert!(
            !store
                .claim_notice("r3", "b", NoticeStage::Pending)
                .expect("answers"),
            "{backend}"
        );
        assert!(store
            .claim_notice("r3", "b", NoticeStage::Escalated)
            .expect("claims"));
        assert!(
            !store
                .claim_notice("r3", "b", NoticeStage::Pending)
                .expect("answers"),
            "{backend}: no going back"
        );
        assert_eq!(
            store.gate("r3", "b").unwrap().unwrap().notified,
            NoticeStage::Escalated
        );
        // An escalation moves the deadline, once.
        let until = store::now() + 3600.0;
        assert!(store.escalate_gate("r3", "b", until).expect("escalates"));
        assert!(
            !store
                .escalate_gate("r3", "b", until + 1.0)
                .expect("answers"),
            "{backend}"
        );
        let b = store.gate("r3", "b").unwrap().unwrap();
        assert_eq!(b.timeout_at, Some(until), "{backend}");
        assert!(b.escalated_at.is_some());
        assert_eq!(b.status, "pending");
        // The final outcome by timeout.
        assert!(store
            .decide_gate_on_timeout("r3", "c", false)
            .expect("decides"));
        let c = store.gate("r3", "c").unwrap().unwrap();
        assert_eq!(
            (c.status.as_str(), c.source),
            ("rejected", Some(DecisionSource::Timeout)),
            "{backend}"
        );
        assert_eq!(c.reason.as_deref(), Some("timed out"));

        // Samples: at most `per_day` a day per flow and gate, once per case.
        let sample = |key: &str| ReviewRecord::sampled("r3", key, "main", "refund");
        assert!(store.sample_review(&sample("a"), Some(2)).expect("samples"));
        assert!(
            !store.sample_review(&sample("a"), Some(2)).expect("answers"),
            "{backend}: once per case"
        );
        assert!(store.sample_review(&sample("b"), Some(2)).expect("samples"));
        assert!(
            !store.sample_review(&sample("c"), Some(2)).expect("answers"),
            "{backend}: the day's cap"
        );
        let mut other = sample("c");
        other.gate = "another".into();
        assert!(
            store.sample_review(&other, Some(2)).expect("samples"),
            "{backend}: caps are per gate"
        );
        assert_eq!(store.reviews(Some("r3"), true).expect("reviews").len(), 3);
        assert!(store
            .record_review("r3", "a", Verdict::Agree, "ana", None)
            .expect("reviews"));
        assert!(
            !store
                .record_review("r3", "a", Verdict::Disagree, "bo", None)
                .expect("answers"),
            "{backend}: a verdict is given once"
        );
        assert!(store
            .record_review("r3", "b", Verdict::Disagree, "bo", Some("too generous"))
            .expect("reviews"));
        assert!(!store
            .record_review("r3", "zz", Verdict::Agree, "bo", None)
            .expect("answers"));
        let all = store.reviews(Some("r3"), false).expect("reviews");
        assert_eq!(all.len(), 3, "{backend}");
        let a = all.iter().find(|r| r.key == "a").expect("a");
        assert_eq!(
            (a.verdict, a.reviewed_by.as_deref()),
            (Some(Verdict::Agree), Some("ana"))
        );
        let b = all.iter().find(|r| r.key == "b").expect("b");
        assert_eq!(b.note.as_deref(), Some("too generous"), "{backend}");
        assert_eq!(
            store.reviews(None, true).expect("open").len(),
            1,
            "{backend}"
        );
    }
}

/// The PostgreSQL client runs on the caller's thread (no connection task
/// of its own): a checkpoint bigger than the socket's buffers is written,
/// a read of thousands of rows (more answers than the client's channel
/// holds at once) comes back whole, and a connection the server killed
/// fails one call with a store error, after which the store connects again.
#[test]
fn postgres_large_checkpoints_long_reads_and_a_killed_connection() {
    let url = support::postgres::database("inline");
    let store = Store::open(std::path::Path::new(&url), Durability::Full).expect("opens");
    let lease = Lease::new_run("big");
    store.create_run(&record("big"), &lease).expect("creates");
    // 5,000 results of 2 KiB: a 10 MiB statement, past any socket buffer.
    let batch: Vec<StepRow> = (0..5_000)
        .map(|i| {
            row(
                &format!("main.s{i}"),
                Some(json!({"i": i, "pad": "p".repeat(2048)})),
            )
        })
        .collect();
    store
        .commit_steps(&lease, &batch, &[], spend(1), None)
        .expect("commits a large batch");
    let steps = store.steps("big").expect("reads them back");
    assert_eq!(steps.len(), 5_000);
    assert_eq!(
        steps["main.s4999"],
        Some(json!({"i": 4999, "pad": "p".repeat(2048)}))
    );

    let mut admin = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            support::postgres::cluster().port
        ),
        postgres::NoTls,
    )
    .expect("connects");
    let db = url.rsplit('/').next().expect("a database name");
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .expect("terminates")
        .get(0);
    assert_eq!(killed, 1, "the store's one connection");
    let failed = store.steps("big");
    assert!(
        matches!(failed, Err(StoreError::Failed(_))),
        "a call on the killed connection fails as a store error: {:?}",
        failed.map(|s| s.len())
    );
    assert_eq!(
        store
            .steps("big")
            .expect("the next call connects again")
            .len(),
        5_000
    );
}

/// A long run's write-ahead log is checkpointed as it grows, by a thread of
/// the store's (not inside a commit, where it held a step up for tens of
/// milliseconds), and the log starts over instead of growing with the run.
#[test]
fn a_long_runs_log_is_checkpointed_by_a_thread_of_its_own_and_stays_bounded() {
    let dir = std::env::temp_dir().join(format!(
        "flowc-store-wal-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let file = dir.join("runs.db");
    let wal = dir.join("runs.db-wal");
    let store = Store::open(&file, Durability::Normal).expect("opens SQLite");
    let lease = Lease::new_run("long");
    store.create_run(&record("long"), &lease).expect("creates");
    // This process's checkpoint threads, by thread id.
    let checkpointers = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/proc/self/task")
            .expect("lists this process's threads")
            .filter_map(|t| {
                let t = t.ok()?;
                let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
                (name.trim() == "flowc-wal-ckpt").then(|| t.file_name().to_string_lossy().into())
            })
            .collect()
    };
    let before = checkpointers();
    // 12,000 commits of a 1 KiB step: more than 12,000 pages of log
    // without a checkpoint, twelve times the mark.
    let mut largest_log = 0;
    for i in 0..12_000 {
        store
            .commit_steps(
                &lease,
                &[row(&format!("main.s{i}"), Some(json!("x".repeat(1024))))],
                &[],
                spend(i + 1),
                None,
            )
            .expect("commits");
        largest_log = largest_log.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // A thread that was not there before: this store's (had its commits
    // checkpointed themselves, there would be none new).
    assert!(
        checkpointers().difference(&before).count() >= 1,
        "no checkpoint thread was started"
    );
    // The log's file keeps its largest size once it starts over: at most
    // four times the mark and the commit that crossed it (commits back to
    // back, as here, wait there for the thread and copy what is left), not
    // the run's 12,000 pages and more, however slow the thread is (under
    // load, one of its passes outlasted a thousand commits). A frame is a
    // page and its 24-byte header; the file has a 32-byte header.
    let bound = 32 + (4_000 + 32) * (4_096 + 24);
    assert!(
        largest_log <= bound,
        "the log grew to {largest_log} bytes, past {bound}"
    );
    assert!(
        std::fs::metadata(&file).expect("the database").len() > 8 << 20,
        "the steps were copied into the database"
    );
    let steps = store.steps("long").expect("reads them back");
    assert_eq!(steps.len(), 12_000);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
