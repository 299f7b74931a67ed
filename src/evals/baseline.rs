//! An eval against an earlier one (`--baseline REF`): which rows and which
//! scorers lost more than the tolerance. Rows are matched by their input,
//! so a dataset that gained rows still compares the ones it kept.

use std::fmt::Write as _;

use serde::Serialize;

use super::EvalResult;

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The stored eval run compared with.
    pub baseline: String,
    pub tolerance: f64,
    pub evals: Vec<EvalComparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalComparison {
    pub name: String,
    pub mean: Change,
    /// Per scorer: its mean before and now (only those that regressed).
    pub scorers: Vec<(String, Change)>,
    /// Rows whose score (or one of whose scorers) regressed.
    pub rows: Vec<RowRegression>,
    /// Evals or rows the baseline does not have.
    pub new_rows: usize,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Change {
    pub before: f64,
    pub now: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowRegression {
    pub row: usize,
    pub line: usize,
    pub run_id: String,
    pub score: Change,
    /// The scorers of this row that lost more than the tolerance.
    pub scorers: Vec<(String, Change)>,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.evals
            .iter()
            .map(|e| e.rows.len() + e.scorers.len())
            .sum()
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "baseline {} (tolerance {}):",
            self.baseline, self.tolerance
        );
        for e in &self.evals {
            let _ = writeln!(
                out,
                "  eval {:?}: mean {:.2} -> {:.2}{}",
                e.name,
                e.mean.before,
                e.mean.now,
                if e.new_rows > 0 {
                    format!(" ({} rows not in the baseline)", e.new_rows)
                } else {
                    String::new()
                }
            );
            for (s, c) in &e.scorers {
                let _ = writeln!(
                    out,
                    "    scorer {s} regressed: {:.2} -> {:.2}",
                    c.before, c.now
                );
            }
            for r in &e.rows {
                let scorers: Vec<String> = r
                    .scorers
                    .iter()
                    .map(|(s, c)| format!("{s} {:.2} -> {:.2}", c.before, c.now))
                    .collect();
                let _ = writeln!(
                    out,
                    "    row {} (line {}) regressed: {:.2} -> {:.2} ({}); trace: flowc trace {}",
                    r.row,
                    r.line,
                    r.score.before,
                    r.score.now,
                    scorers.join(", "),
                    r.run_id
                );
            }
        }
        let n = self.regressions();
        let _ = writeln!(
            out,
            "{}",
            if n == 0 {
                "no regressions".to_string()
            } else {
                format!("{n} regressions")
            }
        );
        out
    }
}

pub fn compare(
    baseline: &str,
    before: &[EvalResult],
    now: &[EvalResult],
    tolerance: f64,
) -> Comparison {
    let lost = |b: f64, n: f64| b - n > tolerance + 1e-9;
    let mut evals = Vec::new();
    for e in now {
        let Some(b) = before.iter().find(|b| b.name == e.name) else {
            continue;
        };
        let scorers = e
            .scorers
            .iter()
            .filter_map(|s| {
                let old = b.scorers.iter().find(|o| o.name == s.name)?;
                lost(old.mean, s.mean).then(|| {
                    (
                        s.name.clone(),
                        Change {
                            before: old.mean,
                            now: s.mean,
                        },
                    )
                })
            })
            .collect();
        let mut rows = Vec::new();
        let mut new_rows = 0;
        for r in &e.rows {
            let Some(old) = b.rows.iter().find(|o| o.input == r.input) else {
                new_rows += 1;
                continue;
            };
            let scorers: Vec<(String, Change)> = r
                .scores
                .iter()
                .filter_map(|s| {
                    let o = old.scores.iter().find(|o| o.name == s.name)?;
                    lost(o.score, s.score).then(|| {
                        (
                            s.name.clone(),
                            Change {
                                before: o.score,
                                now: s.score,
                            },
                        )
                    })
                })
                .collect();
            if lost(old.score, r.score) || !scorers.is_empty() {
                rows.push(RowRegression {
                    row: r.row,
                    line: r.line,
                    run_id: r.run_id.clone(),
                    score: Change {
                        before: old.score,
                        now: r.score,
                    },
                    scorers,
                });
            }
        }
        evals.push(EvalComparison {
            name: e.name.clone(),
            mean: Change {
                before: b.mean,
                now: e.mean,
            },
            scorers,
            rows,
            new_rows,
        });
    }
    Comparison {
        baseline: baseline.to_string(),
        tolerance,
        evals,
    }
}
