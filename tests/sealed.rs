//! What `check` proves is what `run` does: the sealed program's guarantees,
//! tried against a real loopback server.
//!
//! - Two modules may declare tools of one name with different parameters:
//!   each call is validated against its own tool's schema (tables are keyed
//!   by declaration id, not name).
//! - An idempotency key template reads `env.`, parameters and their fields,
//!   and arrives exactly as declared; one that cannot render fails the call
//!   with a structured error before anything is sent.

use crate::support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowc::run::{self, Outcome, Report, RunOptions};
use flowc::{compile, CheckedProgram, Input};
use serde_json::{json, Value};
use support::mock_server::{MockServer, Reply};

fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "sealed-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes `files` into a fresh folder and checks the first one.
fn checked(name: &str, files: &[(&str, &str)]) -> CheckedProgram {
    let dir = scratch(name);
    for (file, text) in files {
        std::fs::write(dir.join(file), text).expect("write a source file");
    }
    support::program::compiled(&[Input::Path(dir.join(files[0].0))])
        .program
        .expect("checked")
}

fn options(vars: HashMap<String, String>) -> RunOptions {
    RunOptions {
        env: Arc::new(move |name: &str| vars.get(name).cloned()),
        ..RunOptions::default()
    }
}

fn run(
    program: &CheckedProgram,
    flow: &str,
    input: Value,
    vars: HashMap<String, String>,
) -> Report {
    run::run(program, flow, input, options(vars)).expect("the run starts")
}

const ORDERS: &str = r#"
tool lookup(order_id: string) -> { found: bool } {
  http GET "{env.API}/orders/{order_id}"
  effect read
  timeout 5s
}

flow order(order_id: string) -> bool {
  budget { steps 5, tool_calls 5, wall 1m }
  let r = lookup(order_id: order_id)
  return r.found
}
"#;

const STOCK: &str = r#"
tool lookup(sku: number, warehouse: string, exact: bool) -> { found: bool } {
  http POST "{env.API}/stock"
  effect read
  timeout 5s
}

flow stock(sku: number, warehouse: string) -> bool {
  budget { steps 5, tool_calls 5, wall 1m }
  let r = lookup(sku: sku, warehouse: warehouse, exact: true)
  return r.found
}
"#;

const MAIN: &str = r#"
use "./orders.flow".{order}
use "./stock.flow".{stock}

flow both(order_id: string, sku: number) -> { order: bool, stock: bool } {
  budget { steps 20, tool_calls 20, wall 1m }
  let o = order(order_id: order_id)
  let s = stock(sku: sku, warehouse: "north")
  return { order: o, stock: s }
}
"#;

#[test]
fn same_named_tools_in_two_modules_each_run_against_their_own_schema() {
    let program = checked(
        "same-named",
        &[
            ("main.flow", MAIN),
            ("orders.flow", ORDERS),
            ("stock.flow", STOCK),
        ],
    );
    let server = MockServer::start();
    server.always("GET /orders/A-17", Reply::ok(json!({"found": true})));
    server.always("POST /stock", Reply::ok(json!({"found": false})));
    let vars = HashMap::from([("API".to_string(), server.base_url())]);
    let report = run(
        &program,
        "both",
        json!({"order_id": "A-17", "sku": 42}),
        vars,
    );
    match &report.outcome {
        Outcome::Completed(v) => assert_eq!(v, &json!({"order": true, "stock": false})),
        other => panic!("the run did not complete: {other:?}"),
    }
    let requests = server.requests();
    let stock = requests
        .iter()
        .find(|r| r.path == "/stock")
        .expect("the stock tool was called");
    assert_eq!(
        stock.body,
        json!({"sku": 42, "warehouse": "north", "exact": true}),
        "the stock tool's own arguments, validated against its own parameters"
    );
    assert!(
        requests.iter().any(|r| r.path == "/orders/A-17"),
        "the orders tool was called: {requests:?}"
    );
    assert_eq!(report.calls.get("lookup"), Some(&2), "{:?}", report.calls);
}

const POSTING: &str = r#"
type Invoice { id: string, customer: { region: string } }

tool post(invoice: Invoice, amount: number, memo?: string) -> { ok: bool } {
  http POST "{env.API}/post"
  effect write
  timeout 5s
  idempotency "{env.TENANT}/{invoice.customer.region}/{invoice.id}:{amount}:{memo}"
}

flow pay(invoice: Invoice, amount: number) -> bool {
  budget { steps 5, tool_calls 5, wall 1m }
  let r = post(invoice: invoice, amount: amount)
  return r.ok
}
"#;

#[test]
fn an_idempotency_key_reads_env_parameters_and_fields_exactly_as_declared() {
    let program = checked("idempotency", &[("pay.flow", POSTING)]);
    let server = MockServer::start();
    server.always("POST /post", Reply::ok(json!({"ok": true})));
    let vars = HashMap::from([
        ("API".to_string(), server.base_url()),
        ("TENANT".to_string(), "acme-eu".to_string()),
    ]);
    let invoice = json!({"id": "INV-9", "customer": {"region": "emea"}});
    let report = run(
        &program,
        "pay",
        json!({"invoice": invoice, "amount": 120.5}),
        vars,
    );
    assert!(
        matches!(report.outcome, Outcome::Completed(_)),
        "{:?}",
        report.outcome
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let key = requests[0]
        .header("idempotency-key")
        .expect("an Idempotency-Key header");
    // The run and the step instance, then the declared key, whole: the
    // absent optional `memo` renders as nothing.
    assert!(
        key.starts_with(&format!("{}:", report.run_id)),
        "the key names the run: {key}"
    );
    assert!(
        key.ends_with(":acme-eu/emea/INV-9:120.5:"),
        "the declared part arrives exactly as declared: {key}"
    );
}

#[test]
fn an_idempotency_key_that_cannot_render_stops_the_run_before_any_call() {
    let program = checked("idempotency-unset", &[("pay.flow", POSTING)]);
    let server = MockServer::start();
    server.always("POST /post", Reply::ok(json!({"ok": true})));
    // TENANT is not set: the key cannot be what the author declared, and
    // the preflight finds it before anything is sent.
    let vars = HashMap::from([("API".to_string(), server.base_url())]);
    let invoice = json!({"id": "INV-9", "customer": {"region": "emea"}});
    let result = run::run(
        &program,
        "pay",
        json!({"invoice": invoice, "amount": 3}),
        options(vars),
    );
    let Err(run::SetupError::Preflight(missing)) = result else {
        panic!("the run must not start");
    };
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].what.contains("TENANT"), "{missing:?}");
    assert!(missing[0].needed_by.contains("tool `post`"), "{missing:?}");
    assert!(
        server.requests().is_empty(),
        "nothing may be sent without its key: {:?}",
        server.requests()
    );
}

/// A program with one `llm` step on a model priced `input`/`output` dollars
/// per million tokens, and a cost budget of `budget` dollars.
fn priced_program(input: f64, output: f64, max_tokens: u64, prompt: &str, budget: f64) -> String {
    format!(
        r#"
provider p {{
  protocol openai
  base_url "http://127.0.0.1:9/v1"
  price "m" {{ input ${input}, output ${output} }}
}}
model m = p("m") {{ max_tokens: {max_tokens} }}

flow f() -> string {{
  budget {{ cost ${budget:.6}, steps 10, wall 1m }}
  let answer = llm m -> string {{ prompt "{prompt}" retry 0 }}
  return answer
}}
"#
    )
}

fn compiled(text: &str) -> flowc::Compilation {
    compile(&[Input::Text {
        name: "priced.flow".into(),
        bytes: text.as_bytes().to_vec(),
    }])
    .expect("compiles")
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// One model-cost formula (`exec::Price::cost`): the checker's worst case
    /// is the formula at the prompt estimate and `max_tokens` (B004 exactly
    /// when the budget is below it), and the runtime settles every call at
    /// the formula over the usage it reports.
    #[test]
    fn the_checker_and_the_runtime_price_model_calls_with_one_formula(
        cents_in in 100u32..4000,
        cents_out in 100u32..9000,
        max_tokens in 1000u64..100_000,
        words in 1usize..30,
    ) {
        let (input, output) = (f64::from(cents_in) / 100.0, f64::from(cents_out) / 100.0);
        let prompt = vec!["word"; words].join(" ");
        let price = flowc::exec::Price { input, output };
        let prompt_tokens = (prompt.chars().count() as f64 / 4.0).ceil();
        let worst = price.cost(prompt_tokens, max_tokens as f64);
        // Budgets written to 6 decimal places: a little under and a little
        // over the worst case (at least $0.001 with these prices).
        let under = (worst * 1e6).floor() / 1e6 - 1e-6;
        let over = (worst * 1e6).ceil() / 1e6 + 1e-6;
        let low = compiled(&priced_program(input, output, max_tokens, &prompt, under));
        let b004 = |c: &flowc::Compilation| c.problems.sorted().iter().any(|d| d.code.as_str() == "B004");
        proptest::prop_assert!(b004(&low), "no B004 at ${under} < ${worst}");
        let high = compiled(&priced_program(input, output, max_tokens, &prompt, over));
        proptest::prop_assert!(!b004(&high), "B004 at ${over} >= ${worst}");
        // The runtime reserves prompts at a more conservative size than the
        // checker's estimate (docs/running.md), so it runs with room to spare.
        let roomy = compiled(&priced_program(input, output, max_tokens, &prompt, over * 10.0));
        let Some(program) = roomy.program else {
            return Err(proptest::test_runner::TestCaseError::fail("the program does not check"));
        };
        proptest::prop_assert!(high.program.is_some(), "the program checks at ${over}");
        let sealed_price = program.sealed().models[0].price;
        proptest::prop_assert_eq!(sealed_price, Some(price));
        // The runtime settles what the call used, by the same formula.
        let options = RunOptions {
            world: flowc::run::World::Scripted(flowc::run::Script {
                models: HashMap::from([(
                    "m".to_string(),
                    std::collections::VecDeque::from([flowc::run::Scripted::Returns(json!("ok"))]),
                )]),
                ..Default::default()
            }),
            env: Arc::new(|_: &str| None),
            ..RunOptions::default()
        };
        let report = run::run(&program, "f", json!({}), options).expect("the run starts");
        let call = report
            .events
            .iter()
            .find(|e| e["kind"] == "model_call")
            .expect("a model call span");
        let used_in = call["input_tokens"].as_u64().unwrap_or_default();
        let used_out = call["output_tokens"].as_u64().unwrap_or_default();
        let charged = call["cost"].as_f64().unwrap_or_default();
        let expected = price.cost(used_in as f64, used_out as f64);
        proptest::prop_assert!((charged - expected).abs() < 1e-12, "charged {charged}, formula {expected}");
    }
}
