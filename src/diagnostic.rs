//! Problems are data: every stage returns [`Diagnostic`]s, collected into
//! [`Problems`] and rendered in one place (`render`).

use crate::code::{Code, Severity};
use crate::source::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// A fix a tool can apply: replace the text of `span` with `replacement`
/// (an empty span inserts). Only given when the result is known to be
/// valid where it is written: names visible there, correct syntax; the
/// golden corpus applies every one and checks the result
/// (`tests/golden.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    pub span: Span,
    pub replacement: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The token or construct that caused the problem.
    pub span: Span,
    /// What to say under the primary span.
    pub label: String,
    /// Other places that explain the problem.
    pub labels: Vec<Label>,
    pub help: Option<String>,
    /// The fix the help describes, when it is code that can be applied
    /// (boxed: most diagnostics have none, and they travel in `Result`s).
    pub suggestion: Option<Box<Suggestion>>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            span,
            label: String::new(),
            labels: Vec::new(),
            help: None,
            suggestion: None,
        }
    }

    pub fn label(mut self, text: impl Into<String>) -> Diagnostic {
        self.label = text.into();
        self
    }

    pub fn with(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: text.into(),
        });
        self
    }

    pub fn help(mut self, text: impl Into<String>) -> Diagnostic {
        self.help = Some(text.into());
        self
    }

    /// Attaches the machine-applicable form of the help.
    pub fn suggest(mut self, span: Span, replacement: impl Into<String>) -> Diagnostic {
        self.suggestion = Some(Box::new(Suggestion {
            span,
            replacement: replacement.into(),
        }));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// All problems of a compilation, in source order.
#[derive(Clone, Debug, Default)]
pub struct Problems {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Problems {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        match diagnostic.severity {
            Severity::Error => self.errors.push(diagnostic),
            Severity::Warning => self.warnings.push(diagnostic),
        }
    }

    pub fn extend(&mut self, diagnostics: impl IntoIterator<Item = Diagnostic>) {
        for d in diagnostics {
            self.push(d);
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }

    /// Every problem, errors and warnings interleaved by position.
    pub fn sorted(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self.errors.iter().chain(&self.warnings).collect();
        all.sort_by(|a, b| (a.span, a.code, &a.message).cmp(&(b.span, b.code, &b.message)));
        all.dedup_by(|a, b| a.span == b.span && a.code == b.code && a.message == b.message);
        all
    }

    /// Promotes every warning to an error (`--deny warnings`).
    pub fn deny_warnings(&mut self) {
        for mut w in std::mem::take(&mut self.warnings) {
            w.severity = Severity::Error;
            self.errors.push(w);
        }
    }
}
