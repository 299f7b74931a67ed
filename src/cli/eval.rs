//! `flowc eval [PATHS…]`: the evals of the files asked for, their results
//! as text or JSON (and JUnit XML), kept beside the run store, compared
//! with a baseline; recorded or replayed.

use std::path::PathBuf;

use flowc::evals::{self, baseline, report, stored, Recording};
use flowc::Input;

use crate::ListFormat;

pub struct EvalArgs {
    pub inputs: Vec<Input>,
    pub format: ListFormat,
    pub junit: Option<PathBuf>,
    pub baseline: Option<String>,
    pub tolerance: f64,
    pub record: Option<PathBuf>,
    pub replay: Option<PathBuf>,
    /// `None`: `--ephemeral`.
    pub store: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<i32, String> {
    if !(0.0..=1.0).contains(&args.tolerance) {
        return Err("--tolerance is a score difference between 0 and 1".into());
    }
    let c = match crate::execute::compiled(&args.inputs)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(checked) = &c.program else {
        return Ok(1);
    };
    let program = checked.program();
    let chosen: Vec<&flowc::ir::Eval> = program
        .evals
        .iter()
        .filter(|e| c.roots.contains(&c.sources.get(e.span.file).name))
        .collect();
    if chosen.is_empty() {
        return Err("no `eval` blocks in the files given".into());
    }
    let replay = match &args.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Some(Recording::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    // A baseline is read before this eval is stored, so `latest` means the
    // one before.
    let before = match (&args.baseline, &args.store) {
        (Some(reference), Some(store)) => Some(stored::load(store, reference)?),
        (Some(reference), None) => Some(stored::load(
            std::path::Path::new(".flowc/runs.db"),
            reference,
        )?),
        (None, _) => None,
    };
    let durability = crate::execute::durability()?;
    let options = evals::Options {
        store: args.store.clone().map(|s| (s, durability)),
        replay,
        env: std::sync::Arc::new(|name: &str| std::env::var(name).ok()),
    };
    let fingerprint = flowc::run::fingerprint::fingerprint(&c.sources, &c.modules);
    let mut results = Vec::new();
    let mut recording = Recording::default();
    for eval in chosen {
        let (result, answers) = evals::run_eval(
            checked,
            &c.sources,
            &fingerprint,
            eval,
            &options,
            args.record.is_some(),
        )?;
        recording.evals.insert(eval.name.clone(), answers);
        results.push(result);
    }
    let id = flowc::run::new_run_id();
    let comparison = before
        .as_ref()
        .map(|(bid, b)| baseline::compare(bid, b, &results, args.tolerance));
    let doc = report::json(&id, &results, comparison.as_ref());
    if let Some(store) = &args.store {
        stored::save(store, &id, &doc)?;
    }
    if let Some(path) = &args.record {
        let text = serde_json::to_string_pretty(&recording.to_json()).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&results))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    match args.format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default()),
        ListFormat::Human => {
            print!("{}", report::human(&results, comparison.as_ref()));
            if args.store.is_some() {
                println!("eval {id} (compare later with `flowc eval --baseline {id}`)");
            }
        }
    }
    let passed = doc["passed"].as_bool().unwrap_or(false);
    Ok(if passed { 0 } else { 1 })
}
