//! `eval` blocks: the flow under evaluation, its rows (inline or from a
//! dataset file, each checked against the flow's parameters and the
//! expected type before anything runs), its scorers (typed expressions over
//! `input`, `output`, `expected` and `trace`, or model judges lowered as
//! flows of their own), weights, threshold, budget and concurrency.

use serde_json::Value;

use crate::ast::{self, Effect, EvalClauseKind, Stmt};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::ir::*;
use crate::source::{FileId, Span};
use crate::types::{Boundary, Field, Openness, Ty, TypeTable};

use super::expr::{lower_expr, mismatch};
use super::{const_json, Lowerer, Symbol};

pub(crate) fn lower_eval(cx: &mut Lowerer<'_, '_>, m: usize, decl: &ast::EvalDecl) {
    let mut eval = Eval {
        name: decl.name.clone(),
        span: decl.name_span,
        flow: None,
        expected: Ty::Error,
        rows: Vec::new(),
        scorers: Vec::new(),
        threshold: 1.0,
        budget: None,
        concurrency: 1,
    };
    let mut seen: Vec<(&'static str, Span)> = Vec::new();
    let mut once = |cx: &mut Lowerer<'_, '_>, clause: &'static str, span: Span| -> bool {
        if seen.iter().any(|(c, _)| *c == clause) {
            cx.repeated(span, clause);
            return false;
        }
        seen.push((clause, span));
        true
    };
    // The flow first: rows and scorers are typed by it.
    for c in &decl.clauses {
        if let EvalClauseKind::Run { flow, expecting } = &c.kind {
            if !once(cx, "run", c.span) {
                continue;
            }
            match cx.lookup(m, &flow.name) {
                Some(Symbol::Flow(f)) => {
                    eval.flow = Some(f);
                    eval.expected = match expecting {
                        Some(t) => cx.ty(m, t),
                        None => cx.program.flows[f.index()].output.clone(),
                    };
                }
                Some(other) => cx.wrong_kind(
                    flow,
                    other,
                    "a flow",
                    "an eval runs a flow: `run flow_name`",
                ),
                None => cx.undefined(m, flow, "flow", |s| matches!(s, Symbol::Flow(_))),
            }
        }
    }
    let params = eval
        .flow
        .map(|f| signature(&cx.program.flows[f.index()].params))
        .unwrap_or_default();
    let rows = RowSchemas::new(&cx.program.types, &params, &eval.expected);
    let flow_name = eval
        .flow
        .map(|f| cx.program.flows[f.index()].name.clone())
        .unwrap_or_default();
    let file = cx.module_file(m);
    let mut judges: Vec<(usize, &ast::LlmStep, &ast::Step)> = Vec::new();
    let mut threshold_seen = false;
    for c in &decl.clauses {
        match &c.kind {
            EvalClauseKind::Run { .. } => {}
            EvalClauseKind::Dataset { path, path_span } => {
                let source = cx.ws.datasets.get(&(file, path.clone())).cloned();
                match source {
                    // With no flow there is nothing to check rows against.
                    Some(Ok(data)) if eval.flow.is_some() => {
                        dataset_rows(cx, &rows, &flow_name, data, *path_span, &mut eval.rows)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(why)) => cx.report(
                        Diagnostic::new(Code::InvalidDataset, *path_span, why)
                            .label("dataset named here")
                            .help("a dataset is a JSON-lines (`.jsonl`) or CSV (`.csv`) file, relative to this file"),
                    ),
                    None => {}
                }
            }
            EvalClauseKind::Row { input, expecting } => {
                let (line, _) = cx.ws.sources.get(c.span.file).line_col(c.span.start);
                let value = const_json(input);
                let expected = match expecting {
                    Some(e) => match const_json(e) {
                        Some(v) => Some(v),
                        None => {
                            literal_only(cx, e.span);
                            continue;
                        }
                    },
                    None => None,
                };
                match value {
                    Some(input @ Value::Object(_)) => {
                        if eval.flow.is_some() {
                            let problems = rows.problems(&input, expected.as_ref());
                            if !problems.is_empty() {
                                bad_row(
                                    cx,
                                    c.span,
                                    &format!("this row (line {line})"),
                                    &flow_name,
                                    &problems,
                                );
                            }
                        }
                        eval.rows.push(EvalRow {
                            line,
                            span: c.span,
                            data: RowData { input, expected },
                        });
                    }
                    _ => literal_only(cx, input.span),
                }
            }
            EvalClauseKind::Score {
                name,
                weight,
                scorer,
            } => {
                if eval.scorers.iter().any(|s| s.name == name.name) {
                    let d = Diagnostic::new(
                        Code::DuplicateName,
                        name.span,
                        format!("scorer `{}` is declared twice", name.name),
                    )
                    .label("declared again here")
                    .help("give every scorer of an eval its own name");
                    cx.report(d);
                    continue;
                }
                let weight = match weight {
                    Some((w, span)) if *w <= 0.0 || !w.is_finite() => {
                        let d = Diagnostic::new(
                            Code::InvalidDeclaration,
                            *span,
                            "a scorer's weight is a number above zero",
                        )
                        .label("not above zero")
                        .help("drop the scorer instead of weighting it 0; weights are relative (`weight 2` counts twice)");
                        cx.report(d);
                        1.0
                    }
                    Some((w, _)) => *w,
                    None => 1.0,
                };
                let kind = match &scorer.kind {
                    ast::StepKind::Expr(e) => {
                        let output = eval
                            .flow
                            .map_or(Ty::Error, |f| cx.program.flows[f.index()].output.clone());
                        let e = scorer_expr(cx, &params, &output, &eval.expected, e);
                        ScorerKind::Expr(e)
                    }
                    ast::StepKind::Llm(l) => {
                        judges.push((eval.scorers.len(), l, scorer));
                        // Replaced by the judge's flow below.
                        ScorerKind::Judge(FlowId(u32::MAX))
                    }
                    _ => {
                        let d = Diagnostic::new(
                            Code::InvalidDeclaration,
                            scorer.span,
                            "a scorer is an expression or an `llm` judge",
                        )
                        .label("not a scorer")
                        .help("score with `= output.x == expected.x` or `= llm judge -> { score: number >= 0 <= 1, reason: string } { prompt \"…\" }`");
                        cx.report(d);
                        continue;
                    }
                };
                eval.scorers.push(Scorer {
                    name: name.name.clone(),
                    span: name.span,
                    weight,
                    kind,
                });
            }
            EvalClauseKind::Threshold(t) => {
                if !once(cx, "threshold", c.span) {
                    continue;
                }
                threshold_seen = true;
                if !(0.0..=1.0).contains(t) {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        c.span,
                        "a threshold is a score between 0 and 1",
                    )
                    .label("outside [0, 1]")
                    .help("scores are in [0, 1]: `threshold 0.8` passes a row whose weighted score is at least 0.8, and the eval when that many rows pass");
                    cx.report(d);
                } else {
                    eval.threshold = *t;
                }
            }
            EvalClauseKind::Concurrency(n) => {
                if !once(cx, "concurrency", c.span) {
                    continue;
                }
                if *n == 0 {
                    let d = Diagnostic::new(
                        Code::InvalidDeclaration,
                        c.span,
                        "an eval runs at least one row at a time",
                    )
                    .label("zero")
                    .help("write `concurrency 1` to run the rows one after the other");
                    cx.report(d);
                } else {
                    eval.concurrency = *n;
                }
            }
            EvalClauseKind::Budget(b) => {
                if once(cx, "budget", c.span) {
                    eval.budget = Some(cx.budget(b));
                }
            }
        }
    }
    let missing = |cx: &mut Lowerer<'_, '_>, what: &str, help: &str| {
        let d = Diagnostic::new(
            Code::InvalidDeclaration,
            decl.name_span,
            format!("eval {:?} has no {what}", decl.name),
        )
        .label(format!("no {what}"))
        .help(help.to_string());
        cx.report(d);
    };
    if !seen.iter().any(|(c, _)| *c == "run") {
        missing(cx, "`run`", "name the flow to evaluate: `run flow_name`");
    }
    if eval.rows.is_empty()
        && !decl
            .clauses
            .iter()
            .any(|c| matches!(c.kind, EvalClauseKind::Dataset { .. }))
    {
        missing(
            cx,
            "rows",
            "add `dataset \"rows.jsonl\"` or `row { param: value } expecting value`",
        );
    }
    if eval.scorers.is_empty() && judges.is_empty() {
        missing(
            cx,
            "scorer",
            "add `score name = output.field == expected.field`",
        );
    }
    if !threshold_seen {
        missing(cx, "`threshold`", "say what passes: `threshold 0.8` (a row's weighted score, and the share of rows that must pass)");
    }
    if eval.budget.is_none() {
        missing(cx, "`budget`", "bound the whole eval, judges included: `budget { cost $2.00 }`; it is checked against rows × the flow's worst case");
    }
    if let Some(f) = eval.flow {
        for (i, llm, step) in judges {
            let id = judge_flow(
                cx,
                m,
                &decl.name,
                &eval.scorers[i].name,
                f,
                &params,
                &eval.expected,
                llm,
                step,
            );
            // A judge spends from its eval's budget, so no judge call can
            // take more than the whole eval may.
            cx.program.flows[id.index()].budget = eval.budget.clone();
            eval.scorers[i].kind = ScorerKind::Judge(id);
        }
    } else {
        eval.scorers
            .retain(|s| matches!(s.kind, ScorerKind::Expr(_)));
    }
    cx.program.evals.push(eval);
}

fn literal_only(cx: &mut Lowerer<'_, '_>, span: Span) {
    let d = Diagnostic::new(
        Code::InvalidDeclaration,
        span,
        "a row is written with literal values",
    )
    .label("not a literal")
    .help("write the flow's arguments as an object of literals: `row { ticket_id: \"482913\" } expecting { category: \"billing\" }`");
    cx.report(d);
}

fn bad_row(cx: &mut Lowerer<'_, '_>, span: Span, what: &str, flow: &str, problems: &[String]) {
    let d = Diagnostic::new(
        Code::InvalidDataset,
        span,
        format!("{what} does not fit flow `{flow}`: {}", problems.join("; ")),
    )
    .label("this row")
    .help("a row gives the flow's parameters by name (`input`) and, optionally, its `expected` result, each of its declared type");
    cx.report(d);
}

/// The JSON Schemas a row's input and expected value must satisfy: the
/// same documents the runtime validates a flow's input and outputs with.
struct RowSchemas {
    input: Option<jsonschema::Validator>,
    expected: Option<jsonschema::Validator>,
}

impl RowSchemas {
    fn new(types: &TypeTable, params: &[(String, Ty, bool)], expected: &Ty) -> RowSchemas {
        let input = jsonschema::validator_for(&crate::schema::params_document(types, params)).ok();
        let expected = (!expected.is_error())
            .then(|| {
                jsonschema::validator_for(&crate::schema::document(
                    types,
                    expected,
                    Boundary::Outgoing,
                ))
                .ok()
            })
            .flatten();
        RowSchemas { input, expected }
    }

    fn problems(&self, input: &Value, expected: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(v) = &self.input {
            out.extend(v.iter_errors(input).map(|e| violation("input", &e)));
        }
        if let (Some(v), Some(x)) = (&self.expected, expected) {
            out.extend(v.iter_errors(x).map(|e| violation("expected", &e)));
        }
        out.truncate(5);
        out
    }
}

fn violation(root: &str, e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().to_string();
    let mut message = e.to_string();
    if message.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    format!("{root}{path}: {message}")
}

/// The rows of a dataset file: JSON lines (`{"input": {…}, "expected": …}`)
/// or CSV (a header of parameter names and `expected.FIELD` columns).
fn dataset_rows(
    cx: &mut Lowerer<'_, '_>,
    schemas: &RowSchemas,
    flow: &str,
    data: FileId,
    path_span: Span,
    out: &mut Vec<EvalRow>,
) {
    let source = cx.ws.sources.get(data);
    let text = source.text.clone();
    let name = source.name.clone();
    let csv = name.ends_with(".csv");
    let mut offset = 0usize;
    let mut header: Option<Vec<String>> = None;
    let mut parsed: Vec<(usize, Span, Result<RowData, String>)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let start = offset;
        offset += raw.len() + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() || (!csv && line.trim_start().starts_with("//")) {
            continue;
        }
        let span = Span::new(data, start, start + line.len());
        if csv {
            let cells = match csv_cells(line) {
                Ok(c) => c,
                Err(why) => {
                    parsed.push((i + 1, span, Err(why)));
                    continue;
                }
            };
            match &header {
                None => header = Some(cells),
                Some(h) => parsed.push((i + 1, span, csv_row(h, &cells))),
            }
        } else {
            parsed.push((i + 1, span, json_row(line)));
        }
    }
    if parsed.is_empty() {
        let d = Diagnostic::new(Code::InvalidDataset, path_span, format!("{name} has no rows"))
            .label("empty dataset")
            .help("write one row per line: `{\"input\": {…}, \"expected\": …}` (JSON lines), or a CSV header and rows");
        cx.report(d);
    }
    for (line, span, row) in parsed {
        match row {
            Ok(data) => {
                let problems = schemas.problems(&data.input, data.expected.as_ref());
                if !problems.is_empty() {
                    bad_row(
                        cx,
                        span,
                        &format!("row at line {line} of {name}"),
                        flow,
                        &problems,
                    );
                }
                out.push(EvalRow { line, span, data });
            }
            Err(why) => {
                let d = Diagnostic::new(
                    Code::InvalidDataset,
                    span,
                    format!("line {line} of {name} is not a row: {why}"),
                )
                .label("not a row")
                .help("a JSON-lines row is `{\"input\": {param: value}, \"expected\": value}` on one line");
                cx.report(d);
            }
        }
    }
}

fn json_row(line: &str) -> Result<RowData, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(mut map) = v else {
        return Err("not a JSON object".into());
    };
    let input = map
        .remove("input")
        .ok_or("no `input` field (the flow's arguments)")?;
    if !input.is_object() {
        return Err("`input` is not an object of the flow's arguments".into());
    }
    let expected = map.remove("expected");
    if let Some(k) = map.keys().next() {
        return Err(format!(
            "unknown field `{k}` (a row has `input` and `expected`)"
        ));
    }
    Ok(RowData { input, expected })
}

/// One CSV line's cells: commas separate, double quotes quote (`""` is a
/// quote), as RFC 4180 writes them; a row is one line.
fn csv_cells(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("a quoted cell is not closed".into());
    }
    cells.push(cell);
    Ok(cells)
}

/// A CSV cell is the text itself where the column wants a string, JSON
/// otherwise (numbers, booleans, lists).
fn csv_row(header: &[String], cells: &[String]) -> Result<RowData, String> {
    if cells.len() != header.len() {
        return Err(format!(
            "{} cells where the header names {} columns",
            cells.len(),
            header.len()
        ));
    }
    let mut input = serde_json::Map::new();
    let mut expected: Option<serde_json::Map<String, Value>> = None;
    for (column, cell) in header.iter().zip(cells) {
        let value = match serde_json::from_str::<Value>(cell) {
            Ok(v) if !v.is_string() => v,
            _ => Value::String(cell.clone()),
        };
        match column.strip_prefix("expected.") {
            Some(field) => {
                expected
                    .get_or_insert_with(Default::default)
                    .insert(field.to_string(), value);
            }
            None => {
                input.insert(column.clone(), value);
            }
        }
    }
    Ok(RowData {
        input: Value::Object(input),
        expected: expected.map(Value::Object),
    })
}

/// A deterministic scorer: an expression over `input`, `output`, `expected`
/// and `trace` (what the row's run did), a `bool` or a number.
fn scorer_expr(
    cx: &mut Lowerer<'_, '_>,
    params: &[(String, Ty, bool)],
    output: &Ty,
    expected: &Ty,
    e: &ast::Expr,
) -> Expr {
    let scope = scorer_scope(cx, params, output, expected);
    let mut resolve = |cx: &mut Lowerer<'_, '_>, name: &ast::Ident| -> (ExprKind, Ty) {
        match SCORER_SCOPE.iter().position(|n| *n == name.name) {
            Some(i) => (ExprKind::Param(i), scope[i].clone()),
            None => {
                let d = Diagnostic::new(
                    Code::UndefinedName,
                    name.span,
                    format!("there is no value named `{}` here", name.name),
                )
                .label("unknown name")
                .help("a scorer reads `input`, `output`, `expected` and `trace`");
                cx.report(d);
                (ExprKind::Error, Ty::Error)
            }
        }
    };
    let e = lower_expr(cx, e, &mut resolve);
    let types = &cx.program.types;
    let ok = types.assignable(&e.ty, &Ty::Bool) || types.assignable(&e.ty, &Ty::number());
    if !ok {
        mismatch(
            cx,
            e.span,
            &Ty::number(),
            &e.ty,
            "a scorer is a `bool` (1 or 0) or a number in [0, 1]",
        );
    }
    e
}

/// The types of `input`, `output`, `expected` and `trace`, in
/// [`SCORER_SCOPE`] order.
fn scorer_scope(
    cx: &Lowerer<'_, '_>,
    params: &[(String, Ty, bool)],
    output: &Ty,
    expected: &Ty,
) -> [Ty; 4] {
    let input = Ty::Record(
        params
            .iter()
            .map(|(name, ty, optional)| Field {
                name: name.clone(),
                ty: ty.clone(),
                optional: *optional,
            })
            .collect(),
        Openness::Exact,
    );
    [
        input,
        output.clone(),
        // A row that gives no `expected` passes `null`: a scorer that
        // reads it scores 0, with the reason.
        expected.clone(),
        trajectory_type(&cx.program),
    ]
}

/// The type of `trace`, what a row's run did (`evals::trajectory` builds
/// the value): every call in order, calls and first position per name,
/// retries, gates, irreversible calls with no gate decided before them,
/// spend and latency.
fn trajectory_type(program: &Program) -> Ty {
    let per_name = |ty: Ty| {
        Ty::Record(
            program
                .trajectory_names()
                .into_iter()
                .map(|name| Field {
                    name,
                    ty: ty.clone(),
                    optional: false,
                })
                .collect(),
            Openness::Exact,
        )
    };
    let field = |name: &str, ty: Ty| Field {
        name: name.into(),
        ty,
        optional: false,
    };
    Ty::Record(
        vec![
            field("status", Ty::string()),
            field("calls", Ty::list(Ty::string())),
            field("called", per_name(Ty::int())),
            field("first", per_name(Ty::int())),
            field("retries", Ty::int()),
            field("rejected_replies", Ty::int()),
            field("gates", Ty::int()),
            field("ungated_irreversible", Ty::int()),
            field("tokens", Ty::int()),
            field("cost", Ty::number()),
            field("latency_ms", Ty::number()),
        ],
        Openness::Exact,
    )
}

/// A judge: `llm model -> T { … }` as a flow of `(input, output, expected)`
/// returning `T`, so it is typed, validated, retried and budgeted like any
/// `llm` step.
#[allow(clippy::too_many_arguments)]
fn judge_flow(
    cx: &mut Lowerer<'_, '_>,
    m: usize,
    eval: &str,
    score: &str,
    flow: FlowId,
    params: &[(String, Ty, bool)],
    expected: &Ty,
    llm: &ast::LlmStep,
    step: &ast::Step,
) -> FlowId {
    let output = cx.ty(m, &llm.output);
    if !output.is_error() && !judge_output(&cx.program.types, &output) {
        let found = cx.program.types.display(&output);
        let d = Diagnostic::new(
            Code::TypeMismatch,
            llm.output.span,
            format!("a judge returns `{{ score: number >= 0 <= 1, reason: string }}` or `bool`, found `{found}`"),
        )
        .label("not a score")
        .help("declare the judge's output as `{ score: number >= 0 <= 1, reason: string }` (or `bool` for pass/fail): its reply is validated against it, and retried when invalid");
        cx.report(d);
    }
    let flow_output = cx.program.flows[flow.index()].output.clone();
    let [input, _, expected_ty, _] = scorer_scope(cx, params, &flow_output, expected);
    let param = |name: &str, ty: Ty| Param {
        name: name.into(),
        ty,
        optional: false,
        span: step.span,
    };
    cx.program.flows.push(Flow {
        name: format!("eval {eval:?} score {score}"),
        span: step.span,
        params: vec![
            param("input", input),
            param("output", flow_output),
            param("expected", expected_ty),
        ],
        output: output.clone(),
        budget: None,
        graph: Default::default(),
        regions: Vec::new(),
        output_step: None,
        unresolved: false,
        dropped_after: Vec::new(),
        after_points: Default::default(),
        judge: true,
        effect: Effect::Read,
        resources: Vec::new(),
    });
    let id = FlowId(cx.program.flows.len() as u32 - 1);
    let ident = |name: &str| ast::Ident {
        name: name.into(),
        span: step.span,
    };
    let decl = ast::FlowDecl {
        name: ident(score),
        params: Vec::new(),
        output: llm.output.clone(),
        body: vec![
            Stmt::Let(Box::new(ast::Let {
                name: ident("judgement"),
                step: step.clone(),
                after: Vec::new(),
                fallback: None,
                span: step.span,
            })),
            Stmt::Return(
                ast::Expr {
                    kind: ast::ExprKind::Name(ident("judgement")),
                    span: step.span,
                },
                step.span,
            ),
        ],
        span: step.span,
    };
    super::flow::lower_flow(cx, m, id, &decl);
    id
}

/// `bool`, or a record with `score: number` bounded to [0, 1] and `reason: string`.
fn judge_output(types: &TypeTable, ty: &Ty) -> bool {
    match types.resolve(ty) {
        Ty::Bool => true,
        t @ Ty::Record(..) => {
            let score = types.field(t, "score").map(|s| types.resolve(&s).clone());
            let reason = types.field(t, "reason");
            let bounded = matches!(
                score,
                Some(Ty::Number(c) | Ty::Int(c))
                    if c.min.is_some_and(|(lo, _)| lo >= 0.0) && c.max.is_some_and(|(hi, _)| hi <= 1.0)
            );
            bounded && reason.is_some_and(|r| types.assignable(&r, &Ty::string()))
        }
        _ => false,
    }
}
