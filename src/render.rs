//! The one place diagnostics become text: rich terminal output (miette),
//! one-line `short` and GitHub Actions annotations for editors and CI, JSON
//! for tools, and SARIF 2.1.0 for code scanning.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde_json::{json, Value};

use crate::code::{Code, Severity};
use crate::diagnostic::Diagnostic;
use crate::source::{Sources, Span};

/// Output width of rendered diagnostics: fixed, so output is the same in a
/// terminal, a CI log and a golden test.
pub const WIDTH: usize = 100;

/// Past this column a diagnostic is rendered in the plain one-line form.
const MAX_COLUMN: usize = 2000;

/// How many of a diagnostic's secondary labels the human form draws. miette
/// lays labels out in time that grows with their number times the lines
/// they span: a cycle of 5,000 steps took 1.4 s and 600 KB to print. The rest
/// are counted under the drawing; `--format json` and SARIF list them all.
const MAX_LABELS: usize = 16;

/// One diagnostic as miette sees it.
struct Report<'a> {
    diagnostic: &'a Diagnostic,
    /// The labels shown on this report's own source.
    labels: Vec<(Span, String)>,
    source: NamedSource<CharColumns>,
    related: Vec<Report<'a>>,
    severity: Severity,
    message: String,
    code: bool,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        if !self.code {
            return None;
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        Some(Box::new(format!(
            "{severity}[{}]: {}",
            self.diagnostic.code,
            self.diagnostic.code.slug()
        )))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        if !self.code {
            return None;
        }
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().enumerate().map(
            |(i, (span, text))| {
                let text = if text.is_empty() {
                    None
                } else {
                    Some(text.clone())
                };
                let span = SourceSpan::new((span.start as usize).into(), span.len());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, span)
                } else {
                    LabeledSpan::new_with_span(text, span)
                }
            },
        )))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

fn named_source(sources: &Sources, span: Span) -> NamedSource<CharColumns> {
    let file = sources.get(span.file);
    NamedSource::new(file.name.clone(), CharColumns(file.text.clone()))
}

/// A file's text for miette, whose `file:line:column` header counts bytes:
/// here the column counts characters, as in every other output format.
struct CharColumns(Arc<str>);

impl miette::SourceCode for CharColumns {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let contents = self.0.read_span(span, before, after)?;
        if before != 0 {
            // Contents start at a line start: the column is 0 either way.
            return Ok(contents);
        }
        let text: &str = &self.0;
        let at = span.offset().min(text.len());
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let column = text
            .get(line_start..at)
            .map_or(at - line_start, |s| s.chars().count());
        Ok(Box::new(miette::MietteSpanContents::new(
            contents.data(),
            *contents.span(),
            contents.line(),
            column,
            contents.line_count(),
        )))
    }
}

/// Renders one diagnostic for a terminal. Labels in other files than the
/// primary span are shown as related notes with their own source.
pub fn human(sources: &Sources, d: &Diagnostic, color: bool) -> String {
    // miette pads labels with format widths, which cannot exceed u16; a label
    // thousands of columns into a line is unreadable in a terminal anyway.
    let too_wide = std::iter::once(d.span)
        .chain(d.labels.iter().map(|l| l.span))
        .any(|span| {
            let file = sources.get(span.file);
            let (_, col) = file.line_col(span.end);
            col > MAX_COLUMN
        });
    if too_wide {
        let mut out = plain(sources, d);
        if !d.label.is_empty() {
            out.push_str(&format!("  = {}\n", d.label));
        }
        if let Some(h) = &d.help {
            out.push_str(&format!("  help: {h}\n"));
        }
        return out;
    }
    let mut labels = vec![(d.span, d.label.clone())];
    let mut related = Vec::new();
    let hidden = d.labels.len().saturating_sub(MAX_LABELS);
    for l in d.labels.iter().take(MAX_LABELS) {
        if l.span.file == d.span.file {
            labels.push((l.span, l.message.clone()));
        } else {
            related.push(Report {
                diagnostic: d,
                labels: vec![(l.span, String::new())],
                source: named_source(sources, l.span),
                related: Vec::new(),
                severity: Severity::Warning,
                message: l.message.clone(),
                code: false,
            });
        }
    }
    let report = Report {
        diagnostic: d,
        labels,
        source: named_source(sources, d.span),
        related,
        severity: d.severity,
        message: d.message.clone(),
        code: true,
    };
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(WIDTH)
        .with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        // Rendering into a String cannot fail short of a bug in miette; fall
        // back to the plain form rather than lose the diagnostic.
        out = plain(sources, d);
    }
    if hidden > 0 {
        out.push_str(&format!(
            "  = {hidden} more places not shown (`--format json` lists them all)\n"
        ));
    }
    out
}

/// `file:line:col: severity[CODE]: message`, for logs and fallbacks.
pub fn plain(sources: &Sources, d: &Diagnostic) -> String {
    let file = sources.get(d.span.file);
    let (line, col) = file.line_col(d.span.start);
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!(
        "{}:{line}:{col}: {severity}[{}]: {}\n",
        file.name, d.code, d.message
    )
}

/// `--format short`: `file:line:col: severity[CODE]: message`, exactly one
/// line per diagnostic (newlines in the message become spaces), columns
/// counting characters. Vim's `errorformat` and most problem matchers read it.
pub fn short(sources: &Sources, d: &Diagnostic) -> String {
    let file = sources.get(d.span.file);
    let (line, col) = file.line_col(d.span.start);
    format!(
        "{}:{line}:{col}: {}[{}]: {}\n",
        file.name,
        severity_name(d.severity),
        d.code,
        one_line(&d.message)
    )
}

/// `--format github`: one GitHub Actions workflow command per diagnostic,
/// which the Actions runner turns into an annotation on the file and line.
pub fn github(sources: &Sources, d: &Diagnostic) -> String {
    let file = sources.get(d.span.file);
    let (line, col) = file.line_col(d.span.start);
    let (end_line, end_col) = file.line_col(d.span.end);
    let command = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut message = d.message.clone();
    if !d.label.is_empty() {
        message.push_str(&format!("\n{}", d.label));
    }
    if let Some(h) = &d.help {
        message.push_str(&format!("\nhelp: {h}"));
    }
    format!(
        "::{command} file={},line={line},col={col},endLine={end_line},endColumn={end_col},title={}::{}\n",
        escape_property(&file.name),
        escape_property(&format!("{} {}", d.code, d.code.slug())),
        escape_data(&message)
    )
}

fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes a workflow command's message (as the Actions toolkit does).
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn position(sources: &Sources, span: Span) -> Value {
    let file = sources.get(span.file);
    let (sl, sc) = file.line_col(span.start);
    let (el, ec) = file.line_col(span.end);
    json!({
        "start": {"line": sl, "column": sc, "offset": span.start},
        "end": {"line": el, "column": ec, "offset": span.end},
    })
}

/// The `--format json` document (schema documented in docs/json-output.md).
pub fn json(sources: &Sources, files: &[String], diagnostics: &[&Diagnostic]) -> Value {
    let items: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            json!({
                "code": d.code.as_str(),
                "slug": d.code.slug(),
                "severity": severity_name(d.severity),
                "message": d.message,
                "file": sources.get(d.span.file).name,
                "span": position(sources, d.span),
                "label": d.label,
                "labels": d.labels.iter().map(|l| json!({
                    "file": sources.get(l.span.file).name,
                    "span": position(sources, l.span),
                    "message": l.message,
                })).collect::<Vec<_>>(),
                "help": d.help,
                "suggestion": d.suggestion.as_ref().map(|f| json!({
                    "file": sources.get(f.span.file).name,
                    "span": position(sources, f.span),
                    "replacement": f.replacement,
                })),
            })
        })
        .collect();
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    json!({
        "version": 1,
        "files": files,
        "diagnostics": items,
        "summary": {"errors": errors, "warnings": diagnostics.len() - errors},
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn region(sources: &Sources, span: Span) -> Value {
    let file = sources.get(span.file);
    let (sl, sc) = file.line_col(span.start);
    let (el, ec) = file.line_col(span.end);
    // `columnKind` is `unicodeCodePoints`, so offsets count characters too.
    let chars = |end: u32| {
        file.text
            .get(..end as usize)
            .map_or(end as usize, |s| s.chars().count())
    };
    let (offset, end) = (chars(span.start), chars(span.end));
    json!({"startLine": sl, "startColumn": sc, "endLine": el, "endColumn": ec, "charOffset": offset, "charLength": end - offset})
}

fn location(sources: &Sources, span: Span, message: Option<&str>) -> Value {
    let mut loc = json!({
        "physicalLocation": {
            "artifactLocation": {"uri": uri(&sources.get(span.file).name)},
            "region": region(sources, span),
        }
    });
    if let Some(m) = message {
        loc["message"] = json!({"text": m});
    }
    loc
}

/// A relative URI reference for a path as the user wrote it.
fn uri(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            '\\' => out.push('/'),
            c if c.is_ascii_alphanumeric() || "-._~/:".contains(c) => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// The `--format sarif` log (SARIF 2.1.0).
pub fn sarif(sources: &Sources, diagnostics: &[&Diagnostic]) -> Value {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| {
            json!({
                "id": c.as_str(),
                "name": c.slug(),
                "shortDescription": {"text": c.summary()},
                "fullDescription": {"text": c.explanation()},
                "help": {"text": format!("Run `flowc explain {}` for examples.", c.as_str())},
                "defaultConfiguration": {"level": severity_name(c.severity())},
            })
        })
        .collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let index = Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text = format!("{text}\nhelp: {h}");
            }
            json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": index,
                "level": severity_name(d.severity),
                "message": {"text": text},
                "locations": [location(sources, d.span, if d.label.is_empty() { None } else { Some(&d.label) })],
                "relatedLocations": d.labels.iter().enumerate().map(|(i, l)| {
                    let mut loc = location(sources, l.span, Some(&l.message));
                    loc["id"] = json!(i);
                    loc
                }).collect::<Vec<_>>(),
                "fixes": d.suggestion.iter().map(|f| json!({
                    "description": {"text": d.help.as_deref().unwrap_or("apply the suggested change")},
                    "artifactChanges": [{
                        "artifactLocation": {"uri": uri(&sources.get(f.span.file).name)},
                        "replacements": [{
                            "deletedRegion": region(sources, f.span),
                            "insertedContent": {"text": f.replacement},
                        }],
                    }],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "flowc",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}
