//! `flowc graph`: one flow of a [`CheckedProgram`] as a Mermaid flowchart or
//! a Graphviz digraph.
//!
//! Only a checked program is drawn, so the graph is acyclic and every name is
//! resolved. [`diagram`] builds a format-neutral [`Diagram`] (one node per
//! step, one cluster per loop body or branch arm, one edge per pair of
//! connected steps); [`mermaid`] and [`dot`] print it. The output depends
//! only on the program: nodes, clusters and edges come in index order, so it
//! can be compared with a snapshot.
//!
//! Edges: the step graph may hold several edges between one pair of steps
//! (a branch arm's result is both read by the join and part of its arm).
//! Each pair is drawn once, in the style of its strongest reason:
//! data, then check guard, then `after`, then region structure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use petgraph::visit::EdgeRef;

use crate::ast::{Decision, Effect};
use crate::check::{effect_of, CheckedProgram};
use crate::ir::{CallTarget, Dep, Fallback, Flow, FlowId, Program, RegionKind, Step, StepKind};
use crate::suggest::did_you_mean;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

/// What a step is, which decides its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Tool,
    Llm,
    Agent,
    SubFlow,
    Gate,
    Check,
    /// A loop's item: the entry of its body.
    LoopItem,
    /// A loop's result: the list of its body's results.
    Loop,
    /// A branch condition or match subject.
    Decide,
    /// The join of a branch.
    Branch,
    Value,
    Return,
}

impl NodeKind {
    /// The Mermaid class for steps of this kind, if any.
    fn class(self) -> Option<&'static str> {
        match self {
            NodeKind::Gate => Some("gate"),
            NodeKind::Llm => Some("llm"),
            NodeKind::Agent => Some("agent"),
            NodeKind::SubFlow => Some("subflow"),
            NodeKind::Check => Some("check"),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `n` and the step's index: a safe identifier in both formats.
    pub id: String,
    pub kind: NodeKind,
    /// The label, one entry per line, unescaped.
    pub lines: Vec<String>,
    /// What running the step may do (calls only), fallback included.
    pub effect: Option<Effect>,
    /// The cluster the step sits in; 0 is the flow body.
    pub cluster: usize,
}

/// A loop body or branch arm (cluster 0 is the flow body itself).
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// `r` and the region's index.
    pub id: String,
    pub parent: Option<usize>,
    pub title: String,
    pub is_loop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeStyle {
    /// The target reads the source's value: solid.
    Data,
    /// `after`: dashed.
    After,
    /// A `check` guards the target: dotted.
    Guard,
    /// Region structure (into a loop body or branch arm, or out to its join).
    Region,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Indexes into [`Diagram::nodes`].
    pub from: usize,
    pub to: usize,
    pub style: EdgeStyle,
}

/// One flow, ready to print.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagram {
    pub flow: String,
    /// `flow name(param: type, …) -> type`.
    pub title: String,
    /// Indexed like the flow's step graph.
    pub nodes: Vec<Node>,
    /// Indexed like the flow's regions; empty regions (a missing `else`) are
    /// kept here but not drawn.
    pub clusters: Vec<Cluster>,
    /// Sorted by (from, to).
    pub edges: Vec<Edge>,
}

/// The flows defined in the files the user asked for, in source order.
pub fn root_flows(program: &Program) -> Vec<FlowId> {
    let mut flows: Vec<FlowId> = (0..program.flows.len())
        .map(|i| FlowId(i as u32))
        .filter(|f| program.roots.contains(&program.flows[f.index()].span.file))
        .filter(|f| !program.flows[f.index()].judge)
        .collect();
    flows.sort_by_key(|f| program.flows[f.index()].span);
    flows
}

/// The flow `flowc graph` draws: the one named, or the only one in the file.
/// The error says what to pass instead.
pub fn select_flow(program: &Program, name: Option<&str>) -> Result<FlowId, String> {
    let flows = root_flows(program);
    let names: Vec<&str> = flows
        .iter()
        .map(|f| program.flows[f.index()].name.as_str())
        .collect();
    match name {
        Some(name) => match flows.iter().zip(&names).find(|(_, n)| **n == name) {
            Some((f, _)) => Ok(*f),
            None if names.is_empty() => Err(format!(
                "there is no flow `{name}`: the file defines no flows"
            )),
            None => {
                let hint = match did_you_mean(name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                Err(format!(
                    "there is no flow `{name}` in the file; {hint}the flows are: {}",
                    names.join(", ")
                ))
            }
        },
        None => match flows.as_slice() {
            [] => Err("the file defines no flows".into()),
            [only] => Ok(*only),
            _ => Err(format!(
                "the file defines {} flows; choose one with `--flow NAME`: {}",
                flows.len(),
                names.join(", ")
            )),
        },
    }
}

/// Renders one flow in `format`.
pub fn render(checked: &CheckedProgram, flow: FlowId, format: Format) -> String {
    let d = diagram(checked, flow);
    match format {
        Format::Mermaid => mermaid(&d),
        Format::Dot => dot(&d),
    }
}

/// The format-neutral picture of one flow.
pub fn diagram(checked: &CheckedProgram, flow_id: FlowId) -> Diagram {
    let program = checked.program();
    let flow = &program.flows[flow_id.index()];
    let types = &program.types;
    let params: Vec<String> = flow
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, types.display(&p.ty)))
        .collect();
    let title = format!(
        "flow {}({}) -> {}",
        flow.name,
        params.join(", "),
        types.display(&flow.output)
    );

    let nodes = flow
        .graph
        .node_indices()
        .map(|n| {
            let step = &flow.graph[n];
            let (kind, lines, effect) = describe(program, flow, step);
            Node {
                id: format!("n{}", n.index()),
                kind,
                lines,
                effect,
                cluster: step.region.index(),
            }
        })
        .collect();

    let clusters = flow
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| Cluster {
            id: format!("r{i}"),
            parent: r.parent.map(|p| p.index()),
            title: region_title(flow, r.kind),
            is_loop: matches!(r.kind, RegionKind::Loop { .. }),
        })
        .collect();

    let mut pairs: BTreeMap<(usize, usize), EdgeStyle> = BTreeMap::new();
    for e in flow.graph.edge_references() {
        let style = match e.weight() {
            Dep::Data => EdgeStyle::Data,
            Dep::Guard => EdgeStyle::Guard,
            Dep::After => EdgeStyle::After,
            Dep::Region => EdgeStyle::Region,
        };
        let slot = pairs
            .entry((e.source().index(), e.target().index()))
            .or_insert(style);
        if rank(style) < rank(*slot) {
            *slot = style;
        }
    }
    let edges = pairs
        .into_iter()
        .map(|((from, to), style)| Edge { from, to, style })
        .collect();

    Diagram {
        flow: flow.name.clone(),
        title,
        nodes,
        clusters,
        edges,
    }
}

/// Lower is stronger: the style drawn when a pair has several reasons.
fn rank(style: EdgeStyle) -> u8 {
    match style {
        EdgeStyle::Data => 0,
        EdgeStyle::Guard => 1,
        EdgeStyle::After => 2,
        EdgeStyle::Region => 3,
    }
}

fn describe(
    program: &Program,
    flow: &Flow,
    step: &Step,
) -> (NodeKind, Vec<String>, Option<Effect>) {
    let mut lines = vec![step.name.clone()];
    let mut effect = None;
    let kind = match &step.kind {
        StepKind::Call { target, .. } => {
            let (kind, what) = match target {
                CallTarget::Tool(_) => (NodeKind::Tool, "tool"),
                CallTarget::Agent(_) => (NodeKind::Agent, "agent"),
                CallTarget::Flow(_) => (NodeKind::SubFlow, "flow"),
            };
            lines.push(format!("{what} {}", target.name(program)));
            let mut e = effect_of(program, *target);
            if let Some(Fallback::Call(fb, _, _)) = step.fallback.as_deref() {
                e = e.max(effect_of(program, *fb));
            }
            effect = Some(e);
            let mut effect_line = match e {
                Effect::Read => "read".to_string(),
                Effect::Write => "✎ write".to_string(),
                Effect::Irreversible => "⚠ irreversible".to_string(),
            };
            if let CallTarget::Tool(t) = target {
                let tool = &program.tools[t.index()];
                let names = |ids: &[crate::ir::ResourceId]| -> String {
                    ids.iter()
                        .map(|r| program.resources[r.index()].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if !tool.reads.is_empty() {
                    let _ = write!(effect_line, " · reads {}", names(&tool.reads));
                }
                if !tool.writes.is_empty() {
                    let _ = write!(effect_line, " · writes {}", names(&tool.writes));
                }
            }
            lines.push(effect_line);
            kind
        }
        StepKind::Llm(call) => {
            let model = program
                .models
                .get(call.model.index())
                .map_or("?", |m| m.name.as_str());
            lines.push(format!(
                "llm {model} → {}",
                shorten(&program.types.display(&call.output), 40)
            ));
            NodeKind::Llm
        }
        StepKind::Approve(a) => {
            let crate::ir::Approve {
                gate,
                timeout_seconds,
                on_timeout,
                escalation,
                policy,
                ..
            } = &**a;
            lines.push(format!("approval gate {gate}"));
            if policy.is_some() {
                lines.push("policy decides some cases".to_string());
            }
            let decision = match on_timeout {
                Decision::Approve => "approve",
                Decision::Reject => "reject",
            };
            let decision = match escalation {
                Some(e) => format!("escalate {} · then {decision}", duration(e.timeout_seconds)),
                None => decision.to_string(),
            };
            match timeout_seconds {
                Some(s) => lines.push(format!("timeout {} · then {decision}", duration(*s))),
                None => lines.push(format!("on timeout {decision}")),
            }
            NodeKind::Gate
        }
        StepKind::Check { requires } => {
            let n = requires.len();
            lines.push(format!(
                "check · {n} require{}",
                if n == 1 { "" } else { "s" }
            ));
            NodeKind::Check
        }
        StepKind::LoopItem { .. } => {
            lines.push("each item".into());
            NodeKind::LoopItem
        }
        StepKind::Loop { parallel, .. } => {
            lines.push(if *parallel > 1 {
                format!("for loop · parallel {parallel}")
            } else {
                "for loop".into()
            });
            NodeKind::Loop
        }
        StepKind::Decide { .. } => {
            lines.push(if step.name.ends_with(".if") {
                "if condition".into()
            } else {
                "match subject".into()
            });
            NodeKind::Decide
        }
        StepKind::Branch { decide, arms } => {
            let is_if = flow.graph[*decide].name.ends_with(".if");
            let missing = arms.iter().any(|a| a.result.is_none());
            lines.push(match (is_if, missing) {
                (true, false) => "if / else".into(),
                (true, true) => "if · no else: null".into(),
                (false, false) => format!("match · {} arms", arms.len()),
                (false, true) => format!("match · {} arms · no match: null", arms.len() - 1),
            });
            NodeKind::Branch
        }
        StepKind::Value(_) => {
            lines.push("value".into());
            NodeKind::Value
        }
        StepKind::Output(_) => {
            lines.push("flow result".into());
            NodeKind::Return
        }
    };
    match step.fallback.as_deref() {
        Some(Fallback::Call(target, _, _)) => {
            lines.push(format!("fallback {}", target.name(program)))
        }
        Some(Fallback::Value(_)) => lines.push("fallback value".into()),
        None => {}
    }
    (kind, lines, effect)
}

fn region_title(flow: &Flow, kind: RegionKind) -> String {
    match kind {
        RegionKind::Root => format!("flow {}", flow.name),
        RegionKind::Loop { node, parallel } => {
            let name = &flow.graph[node].name;
            if parallel > 1 {
                format!("{name}: loop body · parallel {parallel}")
            } else {
                format!("{name}: loop body")
            }
        }
        RegionKind::Arm { node, arm } => {
            let name = &flow.graph[node].name;
            let StepKind::Branch { decide, arms } = &flow.graph[node].kind else {
                return format!("{name}: arm {}", arm + 1);
            };
            let is_if = flow.graph[*decide].name.ends_with(".if");
            let pattern = arms.get(arm).and_then(|a| a.pattern.as_ref());
            match (is_if, pattern) {
                (true, _) if arm == 0 => format!("{name}: then"),
                (true, _) => format!("{name}: else"),
                (false, Some(lit)) => format!("{name}: {lit}"),
                (false, None) => format!("{name}: _"),
            }
        }
    }
}

/// `90s`, `15m`, `72h`, `1.5s`.
fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 && seconds % 3600.0 == 0.0 {
        format!("{}h", seconds / 3600.0)
    } else if seconds >= 60.0 && seconds % 60.0 == 0.0 {
        format!("{}m", seconds / 60.0)
    } else {
        format!("{seconds}s")
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// The clusters drawn (those with at least one step, at any depth), each with
/// its children, in index order.
fn drawn_children(d: &Diagram) -> (Vec<bool>, Vec<Vec<usize>>) {
    let mut nonempty = vec![false; d.clusters.len()];
    for node in &d.nodes {
        let mut c = Some(node.cluster);
        while let Some(i) = c {
            nonempty[i] = true;
            c = d.clusters[i].parent;
        }
    }
    let mut children = vec![Vec::new(); d.clusters.len()];
    for (i, c) in d.clusters.iter().enumerate() {
        if let (Some(p), true) = (c.parent, nonempty[i]) {
            children[p].push(i);
        }
    }
    (nonempty, children)
}

fn nodes_by_cluster(d: &Diagram) -> Vec<Vec<usize>> {
    let mut by = vec![Vec::new(); d.clusters.len()];
    for (i, n) in d.nodes.iter().enumerate() {
        by[n.cluster].push(i);
    }
    by
}

// ------------------------------------------------------------------ Mermaid

/// Text safe inside a quoted Mermaid label: characters Mermaid reads as
/// syntax become numeric entities (`#34;`), which it decodes when drawing.
pub fn mermaid_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '#' | '<' | '>' | '[' | ']' | '{' | '}' | '(' | ')' | '|' | '`' | '&' => {
                let _ = write!(out, "#{};", c as u32);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Opening and closing of a Mermaid node shape.
fn mermaid_shape(kind: NodeKind) -> (&'static str, &'static str) {
    match kind {
        NodeKind::Tool => ("[", "]"),
        NodeKind::Llm => ("([", "])"),
        NodeKind::Agent => (">", "]"),
        NodeKind::SubFlow => ("[[", "]]"),
        NodeKind::Gate => ("{{", "}}"),
        NodeKind::Check => ("[/", "\\]"),
        NodeKind::LoopItem => ("[/", "/]"),
        NodeKind::Loop => ("[\\", "/]"),
        NodeKind::Decide => ("{", "}"),
        NodeKind::Branch => ("((", "))"),
        NodeKind::Value => ("(", ")"),
        NodeKind::Return => ("(((", ")))"),
    }
}

/// The class that marks a node: its effect when it writes, else its kind.
fn mermaid_class(node: &Node) -> Option<&'static str> {
    match node.effect {
        Some(Effect::Irreversible) => Some("irreversible"),
        Some(Effect::Write) => Some("write"),
        _ => node.kind.class(),
    }
}

const MERMAID_CLASSES: [(&str, &str); 7] = [
    ("gate", "fill:#fff4ce,stroke:#b7791f,stroke-width:2px"),
    (
        "irreversible",
        "fill:#fde2e1,stroke:#c53030,stroke-width:3px",
    ),
    ("write", "fill:#fff7ed,stroke:#dd6b20,stroke-width:2px"),
    ("llm", "fill:#e7efff,stroke:#3b5bdb"),
    ("agent", "fill:#efe7ff,stroke:#6741d9"),
    ("subflow", "fill:#f1f3f5,stroke:#495057"),
    ("check", "fill:#e6fcf5,stroke:#0c8599"),
];

/// A Mermaid `flowchart TD`.
pub fn mermaid(d: &Diagram) -> String {
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(out, "  %% {}", d.title.replace('\n', " "));
    let (_, children) = drawn_children(d);
    let by_cluster = nodes_by_cluster(d);
    if !d.clusters.is_empty() {
        mermaid_cluster(d, 0, 1, &children, &by_cluster, &mut out);
    }
    // Mermaid styles links by their position; dashes tell `after` from a guard.
    let mut styles: BTreeMap<u8, (&str, Vec<usize>)> = BTreeMap::new();
    for (i, e) in d.edges.iter().enumerate() {
        let (from, to) = (&d.nodes[e.from].id, &d.nodes[e.to].id);
        let (arrow, style) = match e.style {
            EdgeStyle::Data => ("-->", None),
            EdgeStyle::After => ("-.->|after|", Some("stroke-dasharray:6 4")),
            EdgeStyle::Guard => ("-.->|guard|", Some("stroke-dasharray:2 3")),
            EdgeStyle::Region => ("--o", Some("stroke:#9a9a9a")),
        };
        let _ = writeln!(out, "  {from} {arrow} {to}");
        if let Some(s) = style {
            styles
                .entry(rank(e.style))
                .or_insert((s, Vec::new()))
                .1
                .push(i);
        }
    }
    for (style, links) in styles.values() {
        let links: Vec<String> = links.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "  linkStyle {} {style}", links.join(","));
    }
    for (name, style) in MERMAID_CLASSES {
        let _ = writeln!(out, "  classDef {name} {style}");
    }
    for (name, _) in MERMAID_CLASSES {
        let members: Vec<&str> = d
            .nodes
            .iter()
            .filter(|n| mermaid_class(n) == Some(name))
            .map(|n| n.id.as_str())
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "  class {} {name}", members.join(","));
        }
    }
    out
}

fn mermaid_cluster(
    d: &Diagram,
    cluster: usize,
    depth: usize,
    children: &[Vec<usize>],
    by_cluster: &[Vec<usize>],
    out: &mut String,
) {
    let indent = "  ".repeat(depth);
    for &i in &by_cluster[cluster] {
        let node = &d.nodes[i];
        let (open, close) = mermaid_shape(node.kind);
        let label: Vec<String> = node.lines.iter().map(|l| mermaid_escape(l)).collect();
        let _ = writeln!(
            out,
            "{indent}{}{open}\"{}\"{close}",
            node.id,
            label.join("<br/>")
        );
    }
    for &c in &children[cluster] {
        let cl = &d.clusters[c];
        let _ = writeln!(
            out,
            "{indent}subgraph {}[\"{}\"]",
            cl.id,
            mermaid_escape(&cl.title)
        );
        mermaid_cluster(d, c, depth + 1, children, by_cluster, out);
        let _ = writeln!(out, "{indent}end");
    }
}

// ------------------------------------------------------------------ DOT

/// A Graphviz double-quoted string (the quotes included).
pub fn dot_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot_shape(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Tool => "box",
        NodeKind::Llm => "ellipse",
        NodeKind::Agent => "cds",
        NodeKind::SubFlow => "component",
        NodeKind::Gate => "hexagon",
        NodeKind::Check => "trapezium",
        NodeKind::LoopItem => "parallelogram",
        NodeKind::Loop => "invtrapezium",
        NodeKind::Decide => "diamond",
        NodeKind::Branch => "Mdiamond",
        NodeKind::Value => "box",
        NodeKind::Return => "doublecircle",
    }
}

/// A Graphviz `digraph`.
pub fn dot(d: &Diagram) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&d.flow));
    let _ = writeln!(out, "  label={};", dot_quote(&d.title));
    out.push_str("  labelloc=t;\n  rankdir=TB;\n  newrank=true;\n  fontname=\"Helvetica\";\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let (_, children) = drawn_children(d);
    let by_cluster = nodes_by_cluster(d);
    if !d.clusters.is_empty() {
        dot_cluster(d, 0, 1, &children, &by_cluster, &mut out);
    }
    for e in &d.edges {
        let attrs = match e.style {
            EdgeStyle::Data => "",
            EdgeStyle::After => " [style=dashed, label=\"after\"]",
            EdgeStyle::Guard => " [style=dotted, label=\"guard\"]",
            EdgeStyle::Region => " [color=\"#9a9a9a\", arrowhead=odot]",
        };
        let _ = writeln!(
            out,
            "  {} -> {}{attrs};",
            d.nodes[e.from].id, d.nodes[e.to].id
        );
    }
    out.push_str("}\n");
    out
}

fn dot_node_attrs(node: &Node) -> String {
    let mut attrs = vec![
        format!("shape={}", dot_shape(node.kind)),
        format!("label={}", dot_quote(&node.lines.join("\n"))),
    ];
    let mut style: Vec<&str> = Vec::new();
    if node.kind == NodeKind::Value {
        style.push("rounded");
    }
    let fill = match (node.effect, node.kind) {
        (Some(Effect::Irreversible), _) => {
            attrs.push("color=\"#c53030\"".into());
            attrs.push("penwidth=3".into());
            attrs.push("peripheries=2".into());
            Some("#fde2e1")
        }
        (Some(Effect::Write), _) => {
            attrs.push("color=\"#dd6b20\"".into());
            attrs.push("penwidth=2".into());
            Some("#fff7ed")
        }
        (_, NodeKind::Gate) => {
            attrs.push("color=\"#b7791f\"".into());
            attrs.push("penwidth=2".into());
            Some("#fff4ce")
        }
        (_, NodeKind::Llm) => Some("#e7efff"),
        (_, NodeKind::Agent) => Some("#efe7ff"),
        (_, NodeKind::Check) => Some("#e6fcf5"),
        _ => None,
    };
    if let Some(fill) = fill {
        style.push("filled");
        attrs.push(format!("fillcolor=\"{fill}\""));
    }
    if !style.is_empty() {
        attrs.push(format!("style=\"{}\"", style.join(",")));
    }
    attrs.join(", ")
}

fn dot_cluster(
    d: &Diagram,
    cluster: usize,
    depth: usize,
    children: &[Vec<usize>],
    by_cluster: &[Vec<usize>],
    out: &mut String,
) {
    let indent = "  ".repeat(depth);
    for &i in &by_cluster[cluster] {
        let node = &d.nodes[i];
        let _ = writeln!(out, "{indent}{} [{}];", node.id, dot_node_attrs(node));
    }
    for &c in &children[cluster] {
        let cl = &d.clusters[c];
        let _ = writeln!(out, "{indent}subgraph cluster_{} {{", cl.id);
        let _ = writeln!(out, "{indent}  label={};", dot_quote(&cl.title));
        let style = if cl.is_loop {
            "style=\"rounded,dashed\"; color=\"#3b5bdb\";"
        } else {
            "style=rounded; color=\"#868e96\";"
        };
        let _ = writeln!(out, "{indent}  {style}");
        dot_cluster(d, c, depth + 1, children, by_cluster, out);
        let _ = writeln!(out, "{indent}}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            mermaid_escape("a \"b\" [c] #d <e>"),
            "a #34;b#34; #91;c#93; #35;d #60;e#62;"
        );
        assert_eq!(
            dot_quote("say \"hi\"\\\nthere"),
            "\"say \\\"hi\\\"\\\\\\nthere\""
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(90.0), "90s");
        assert_eq!(duration(900.0), "15m");
        assert_eq!(duration(72.0 * 3600.0), "72h");
        assert_eq!(duration(1.5), "1.5s");
    }
}
