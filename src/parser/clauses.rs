//! The one rule every clause list follows: a clause is given once.
//!
//! Tool, agent, `llm`, `approve` and provider bodies, model parameters,
//! budget entries, a flow's `budget` and a step's `after`/`fallback` are all
//! lists of clauses in any order. Each list gives its clauses to a
//! [`ClauseList`] as it reads them; the second clause with the same key is
//! T007, pointing at both. A key is the clause's rule and, for clauses that
//! may appear once per name (`header "…"`, `price "…"`, a budget entry, a
//! model parameter), that name.

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::grammar::Rule;
use crate::source::Span;

/// The clauses one list has seen so far.
#[derive(Default)]
pub(super) struct ClauseList {
    seen: Vec<(Rule, String, Span)>,
}

impl ClauseList {
    /// Records the clause `rule`, written as `shown` (what a reader would
    /// search for: `timeout`, `header "X-Id"`, `cost`); the diagnostic when
    /// the list already had it.
    pub(super) fn add(&mut self, rule: Rule, shown: &str, span: Span) -> Option<Diagnostic> {
        let first = self
            .seen
            .iter()
            .find(|(r, s, _)| *r == rule && s == shown)
            .map(|(_, _, first)| *first);
        match first {
            Some(first) => Some(
                Diagnostic::new(
                    Code::InvalidDeclaration,
                    span,
                    format!("`{shown}` is given twice"),
                )
                .label("repeated clause")
                .with(first, "first given here")
                .help(format!(
                    "keep one `{shown}`: a clause is given once, and flowc will not guess which one you meant"
                )),
            ),
            None => {
                self.seen.push((rule, shown.to_string(), span));
                None
            }
        }
    }
}
