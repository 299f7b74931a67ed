//! Properties of the typed program, one small pass per property. Every pass
//! reads the [`Program`] and reports into the same list; none stops the
//! others. Only [`check`] can make a [`CheckedProgram`], and only when no
//! error was found, so nothing downstream can run an unchecked graph.
//!
//! Architecture invariant: checking does no IO.

mod approval;
mod context;
mod cost;
mod dead;
mod graph;
mod limits;
mod mcp;
mod reach;
mod resources;
mod retries;
mod seal;
mod secrets;
mod taint;

use crate::diagnostic::{Diagnostic, Problems};
use crate::ir::{CallTarget, Flow, FlowId, Program};
use crate::source::Sources;

pub use seal::{DEFAULT_AGENT_TURN_RETRIES, DEFAULT_AGENT_TURN_TIMEOUT, DEFAULT_LLM_TIMEOUT};

/// A program that passed every check. It can only be built by [`check`]:
/// the checked IR (for `graph`, `schema`, tests) and the sealed program the
/// runtime runs.
#[derive(Debug)]
pub struct CheckedProgram {
    program: Program,
    sealed: crate::exec::Program,
}

impl CheckedProgram {
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The executable form: what `run` takes.
    pub fn sealed(&self) -> &crate::exec::Program {
        &self.sealed
    }
}

/// Runs every pass. Returns the checked program when there are no errors;
/// either way `problems` holds everything found.
pub fn check(
    program: Program,
    sources: &Sources,
    problems: &mut Problems,
) -> Option<CheckedProgram> {
    passes_then_seal(program, sources, problems, |program| {
        seal::seal(&program).map(|sealed| CheckedProgram { program, sealed })
    })
}

/// [`check`] for a caller that never reads the IR again (`flowc check`,
/// the language server): the same passes and the same seal, so the same
/// problems, but the IR moves into the sealed program instead of being
/// copied. Returns the sealed program when there are no errors.
pub fn check_sealed(
    program: Program,
    sources: &Sources,
    problems: &mut Problems,
) -> Option<crate::exec::Program> {
    passes_then_seal(program, sources, problems, seal::seal_owned)
}

/// Every pass, then `seal` when none found an error; a fact the seal
/// cannot find is one more problem.
fn passes_then_seal<T>(
    program: Program,
    sources: &Sources,
    problems: &mut Problems,
    seal: impl FnOnce(Program) -> Result<T, Diagnostic>,
) -> Option<T> {
    if !passes(&program, sources, problems) {
        return None;
    }
    seal(program).map_err(|d| problems.extend([d])).ok()
}

/// Every pass, reporting into `problems`: whether the program may be sealed.
fn passes(program: &Program, sources: &Sources, problems: &mut Problems) -> bool {
    let mut found: Vec<Diagnostic> = Vec::new();
    // Per flow, its steps in topological order, where it has no cycle.
    let orders = graph::cycles(program, &mut found);
    let (recursive, callees_first) = graph::recursion(program, &mut found);
    limits::check(program, &mut found);
    retries::check(program, &mut found);
    mcp::check(program, &mut found);
    // Text a syntax error made the parser skip may call any tool, so no tool
    // is "never called" then.
    let discarded = problems
        .errors
        .iter()
        .any(|d| d.code == crate::code::Code::Syntax);
    reach::check(program, discarded, &mut found);
    secrets::check(program, &mut found);
    dead::check(program, &mut found);
    // The graph passes below need acyclic step graphs.
    graph::call_depth(program, &recursive, &callees_first, &mut found);
    let output_gated = approval::gated_outputs(program, &orders, &callees_first);
    for (i, flow) in program.flows.iter().enumerate() {
        let Some(order) = &orders[i] else {
            continue;
        };
        approval::check(program, flow, order, &output_gated, &mut found);
        resources::check(program, FlowId(i as u32), order, &mut found);
    }
    let analyzable: Vec<bool> = orders
        .iter()
        .zip(&recursive)
        .map(|(o, r)| o.is_some() && !*r)
        .collect();
    cost::check(program, &analyzable, &callees_first, &mut found);
    context::check(program, &mut found);
    taint::check(
        program,
        &analyzable,
        &callees_first,
        &orders,
        &output_gated,
        &mut found,
    );
    // The standard library is checked by flowc's own tests; users see only
    // problems in their files.
    problems.extend(
        found
            .into_iter()
            .filter(|d| !sources.get(d.span.file).is_std()),
    );
    !problems.has_errors()
}

/// Whether `n`, or a loop or branch that encloses it, lost an `after` to a
/// name that did not resolve (reported as N001): its missing order is that
/// mistake, not another one.
pub(crate) fn after_dropped(flow: &Flow, n: petgraph::graph::NodeIndex) -> bool {
    if flow.dropped_after.is_empty() {
        return false;
    }
    if flow.dropped_after.contains(&n) {
        return true;
    }
    let mut r = Some(flow.graph[n].region);
    while let Some(id) = r {
        let region = &flow.regions[id.index()];
        let owner = match region.kind {
            crate::ir::RegionKind::Loop { node, .. } | crate::ir::RegionKind::Arm { node, .. } => {
                Some(node)
            }
            crate::ir::RegionKind::Root => None,
        };
        if owner.is_some_and(|o| flow.dropped_after.contains(&o)) {
            return true;
        }
        r = region.parent;
    }
    false
}

/// The strongest effect calling `target` may have.
pub(crate) fn effect_of(program: &Program, target: CallTarget) -> crate::ast::Effect {
    match target {
        CallTarget::Tool(t) => program.tools[t.index()].effect,
        CallTarget::Agent(a) => program.agents[a.index()].effect(&program.tools),
        CallTarget::Flow(f) => program.flows[f.index()].effect,
    }
}
