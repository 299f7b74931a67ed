//! An eval run's results as text for a terminal, JSON and JUnit XML (one
//! test suite per eval, one test case per row) for CI systems.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::baseline::Comparison;
use super::EvalResult;

/// The `--format json` document (docs/evals.md describes it).
pub fn json(id: &str, evals: &[EvalResult], comparison: Option<&Comparison>) -> Value {
    json!({
        "version": 1,
        "id": id,
        "passed": evals.iter().all(|e| e.passed) && comparison.is_none_or(|c| c.regressions() == 0),
        "evals": evals,
        "baseline": comparison,
    })
}

pub fn human(evals: &[EvalResult], comparison: Option<&Comparison>) -> String {
    let mut out = String::new();
    for e in evals {
        let _ = writeln!(
            out,
            "eval {:?} ({}, flow `{}`): {} rows",
            e.name,
            e.file,
            e.flow,
            e.rows.len()
        );
        for r in &e.rows {
            let scores: Vec<String> = r
                .scores
                .iter()
                .map(|s| format!("{} {}", s.name, score(s.score)))
                .collect();
            let _ = writeln!(
                out,
                "  row {:>3} (line {}) {} {}  {}{}",
                r.row,
                r.line,
                score(r.score),
                if r.passed { "pass" } else { "FAIL" },
                scores.join(" · "),
                match &r.failure {
                    Some(f) => format!("  [{}: {}] run {}", f.class, f.message, r.run_id),
                    None if !r.passed => format!("  run {}", r.run_id),
                    None => String::new(),
                }
            );
            if !r.passed {
                for s in r.scores.iter().filter(|s| s.score < 1.0) {
                    let _ = writeln!(out, "        {}: {}", s.name, s.reason);
                }
            }
        }
        let scorers: Vec<String> = e
            .scorers
            .iter()
            .map(|s| format!("{} {} (weight {})", s.name, score(s.mean), s.weight))
            .collect();
        let _ = writeln!(out, "  scorers: {}", scorers.join(" · "));
        let _ = writeln!(
            out,
            "  mean {}, pass rate {}/{} ({:.1}%), threshold {}: {}",
            score(e.mean),
            e.rows.iter().filter(|r| r.passed).count(),
            e.rows.len(),
            e.pass_rate * 100.0,
            e.threshold,
            if e.passed { "passed" } else { "FAILED" }
        );
        let failures: Vec<String> = e.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "  cost {}, {} tokens, latency mean {:.0} ms, max {:.0} ms; failures: {}",
            crate::exec::dollars(e.cost),
            e.tokens,
            e.latency_ms.mean,
            e.latency_ms.max,
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join(", ")
            }
        );
    }
    if let Some(c) = comparison {
        out.push_str(&c.human());
    }
    out
}

fn score(s: f64) -> String {
    format!("{s:.2}")
}

/// JUnit XML: a suite per eval, a case per row (failed when the row's score
/// is below the threshold or its run did not complete).
pub fn junit(evals: &[EvalResult]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for e in evals {
        let failures = e.rows.iter().filter(|r| !r.passed).count();
        let time: f64 = e.rows.iter().map(|r| r.latency_ms).sum::<f64>() / 1000.0;
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">",
            xml(&format!("eval {}", e.name)),
            e.rows.len()
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"mean\" value=\"{:.4}\"/><property name=\"threshold\" value=\"{}\"/><property name=\"passed\" value=\"{}\"/></properties>",
            e.mean, e.threshold, e.passed
        );
        for r in &e.rows {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"row {} (line {})\" time=\"{:.3}\"",
                xml(&e.name),
                r.row,
                r.line,
                r.latency_ms / 1000.0
            );
            if r.passed {
                out.push_str("/>\n");
                continue;
            }
            let message = match &r.failure {
                Some(f) => format!("{}: {}", f.class, f.message),
                None => format!("score {:.2} below threshold {}", r.score, e.threshold),
            };
            let details: Vec<String> = r
                .scores
                .iter()
                .map(|s| format!("{} {:.2}: {}", s.name, s.score, s.reason))
                .chain(std::iter::once(format!("run {}", r.run_id)))
                .collect();
            let _ = write!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                xml(&message),
                xml(&details.join("\n"))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not XML.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
