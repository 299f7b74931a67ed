//! Generates realistic flows of a given size for the benchmarks (and for a
//! test that keeps them clean, so the benchmark measures the path users hit,
//! not an error path).

use std::fmt::Write;

/// A file with one flow of `steps` steps: tool calls on shared resources,
/// model calls, a bounded loop every 100 steps, checks, and an approval gate
/// before the irreversible calls. About 1.3 lines per step.
pub fn flow_source(steps: usize) -> String {
    let mut s = String::new();
    s.push_str(
        r#"use std.models.{openai}

type Record { id: string matching /^R-[0-9]+$/, score: number >= 0 <= 1, tags: [string] len ..5 }
type Verdict { ok: bool, reason: string len ..200 }

model judge = openai("gpt-4o-mini") { temperature: 0.1, max_tokens: 200 }

resource store
resource outbox

tool fetch(id: string) -> Record {
  http GET "{env.STORE_URL}/records/{id}"
  effect read reads store
  timeout 5s
  retry 2 on rate_limit, timeout backoff 1s * 2 jitter
  limit 300 tokens
}

tool list_records(prefix: string) -> [Record] len ..10 {
  http GET "{env.STORE_URL}/records?prefix={prefix}"
  effect read reads store
  timeout 5s
}

tool publish(id: string, verdict: Verdict) -> { published: bool } {
  http POST "{env.OUTBOX_URL}/publish"
  effect irreversible writes outbox
  timeout 10s
  idempotency "{id}"
}

"#,
    );
    let _ = writeln!(s, "flow generated(seed: string) -> [Verdict] {{");
    let _ = writeln!(
        s,
        "  budget {{ tokens 100M, cost $1000, steps 10M, tool_calls 10M, wall 10h }}"
    );
    let _ = writeln!(s, "  let s0 = fetch(id: seed)");
    // The most recent step whose value is a Record.
    let mut rec = 0;
    let mut verdicts = Vec::new();
    let mut loops = Vec::new();
    for i in 1..steps {
        match i % 10 {
            3 => {
                let _ = writeln!(s, "  let s{i} = llm judge -> Verdict {{");
                let _ = writeln!(
                    s,
                    "    prompt \"Judge {{s{rec}.id}} with score {{s{rec}.score}}.\""
                );
                let _ = writeln!(s, "    retry 1 on invalid");
                let _ = writeln!(s, "  }}");
                verdicts.push(i);
            }
            5 if i % 100 == 5 => {
                let _ = writeln!(s, "  let l{i} = list_records(prefix: s{rec}.id)");
                let _ = writeln!(s, "  let s{i} = for r in l{i} parallel 4 {{");
                let _ = writeln!(
                    s,
                    "    let n{i} = llm judge -> Verdict {{ prompt \"Is {{r.id}} fine?\" }}"
                );
                let _ = writeln!(s, "    n{i}");
                let _ = writeln!(s, "  }}");
                loops.push(i);
            }
            7 => {
                let _ = writeln!(s, "  check c{i} {{ require s{rec}.score >= 0, \"negative score in {{s{rec}.id}}\" }}");
                let _ = writeln!(s, "  let s{i} = fetch(id: s{rec}.id) after c{i}");
                rec = i;
            }
            9 if !verdicts.is_empty() => {
                let v = verdicts[verdicts.len() - 1];
                let _ = writeln!(s, "  let s{i} = fetch(id: s{rec}.id) after s{v}");
                rec = i;
            }
            _ => {
                let _ = writeln!(s, "  let s{i} = fetch(id: s{rec}.id)");
                rec = i;
            }
        }
    }
    let join = |xs: &[usize]| {
        xs.iter()
            .map(|v| format!("s{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "  let verdicts = [{}]", join(&verdicts));
    let notes = if loops.is_empty() {
        String::new()
    } else {
        format!(", show [{}]", join(&loops))
    };
    let _ = writeln!(
        s,
        "  let ok = approve release {{ show verdicts{notes}, timeout 24h }}"
    );
    let _ = writeln!(
        s,
        "  let sent = publish(id: seed, verdict: ok[0]) after s{rec}"
    );
    let _ = writeln!(s, "  return ok");
    let _ = writeln!(s, "}}");
    s
}

/// A chain of `steps` write calls, each `after` the one before it. With
/// `shared_resource`, every call writes the same resource, which the
/// hidden-dependency check (D001) must prove ordered; without, the calls
/// write nothing it tracks, so the chain is the floor for that proof.
pub fn chain_source(steps: usize, shared_resource: bool) -> String {
    let mut s = String::new();
    let writes = if shared_resource {
        " writes ledger"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "resource ledger\n\ntool touch(n: number) -> {{ ok: bool }} {{\n  http POST \"https://ledger.example.com/touch\"\n  effect write{writes}\n  timeout 5s\n}}\n"
    );
    let _ = writeln!(s, "flow chain() -> bool {{");
    let _ = writeln!(s, "  budget {{ steps 10M, tool_calls 10M, wall 10h }}");
    let _ = writeln!(s, "  let s0 = touch(n: 0)");
    for i in 1..steps {
        let _ = writeln!(s, "  let s{i} = touch(n: {i}) after s{}", i - 1);
    }
    let _ = writeln!(s, "  return s{}.ok", steps.saturating_sub(1));
    let _ = writeln!(s, "}}");
    s
}

/// A GitHub Actions workflow of `jobs` jobs in a chain: each `needs` the
/// one before and reads its output, as a flow's steps read the step before.
/// 11 lines a job and 3 of header: 1,000 jobs are 11,002 lines. The
/// comparison with actionlint (`benches/actionlint.rs`) checks it.
#[allow(dead_code)]
pub fn workflow_source(jobs: usize) -> String {
    let mut s = String::from("name: chain\non: push\njobs:\n");
    for j in 0..jobs {
        let _ = writeln!(s, "  j{j}:");
        if j > 0 {
            let _ = writeln!(s, "    needs: j{}", j - 1);
        }
        let _ = writeln!(s, "    runs-on: ubuntu-latest");
        let _ = writeln!(s, "    outputs:");
        let _ = writeln!(s, "      v: ${{{{ steps.s.outputs.v }}}}");
        let _ = writeln!(s, "    steps:");
        let _ = writeln!(s, "      - id: s");
        let _ = writeln!(s, "        env:");
        if j > 0 {
            let _ = writeln!(s, "          PREV: ${{{{ needs.j{}.outputs.v }}}}", j - 1);
        } else {
            let _ = writeln!(s, "          PREV: start");
        }
        let _ = writeln!(s, "        run: echo \"v=$PREV-{j}\" >> \"$GITHUB_OUTPUT\"");
        let _ = writeln!(s, "      - run: echo done");
    }
    s
}
