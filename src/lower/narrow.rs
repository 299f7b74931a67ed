//! Narrowing: what a branch's condition proves about a name inside the arm
//! it guards. In `if x != null { … }` the arm runs only when `x` holds a
//! value, so there `x` has its non-optional type; in a `match` arm on a
//! literal, the subject is that literal. The runtime needs nothing for this:
//! the arm reads the same value, which the condition has already tested.
//!
//! Only bare names narrow (a flow parameter, a step, a loop item): their
//! value cannot change between the test and the arm. A field path such as
//! `t.assignee` does not narrow; bind it with `let` first.

use crate::ast::CompareOp;
use crate::ir::{Expr, ExprKind};
use crate::types::{Lit, Ty, TypeTable};
use petgraph::graph::NodeIndex;

/// A name whose type a condition can narrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subject {
    Param(usize),
    Step(NodeIndex),
}

impl Subject {
    /// The subject an expression reads, if it is a bare name.
    pub(super) fn of(e: &Expr) -> Option<Subject> {
        match e.kind {
            ExprKind::Param(i) => Some(Subject::Param(i)),
            ExprKind::Step(n) => Some(Subject::Step(n)),
            _ => None,
        }
    }
}

/// The names `cond` proves non-null when it evaluates to `truth`:
/// `x != null` (either side) when true, `x == null` when false, through
/// `not`, both sides of `and` when true and both sides of `or` when false.
pub(super) fn non_null_when(cond: &Expr, truth: bool, out: &mut Vec<Subject>) {
    match &cond.kind {
        ExprKind::Not(inner) => non_null_when(inner, !truth, out),
        ExprKind::And(a, b) if truth => {
            non_null_when(a, truth, out);
            non_null_when(b, truth, out);
        }
        ExprKind::Or(a, b) if !truth => {
            non_null_when(a, truth, out);
            non_null_when(b, truth, out);
        }
        ExprKind::Compare(a, op, b) => {
            let tested = matches!((op, truth), (CompareOp::Ne, true) | (CompareOp::Eq, false));
            if !tested {
                return;
            }
            let subject = match (&a.kind, &b.kind) {
                (_, ExprKind::Null) => Subject::of(a),
                (ExprKind::Null, _) => Subject::of(b),
                _ => None,
            };
            out.extend(subject);
        }
        _ => {}
    }
}

/// `ty` without its `null`, if it has one to remove.
pub(super) fn without_null(types: &TypeTable, ty: &Ty) -> Option<Ty> {
    match types.resolve(ty) {
        Ty::Optional(inner) => Some((**inner).clone()),
        _ => None,
    }
}

/// What a `match` subject of type `ty` is in the arm after `seen` literals
/// were matched by the arms above it, when the arm is the wildcard: the
/// literals of its union that remain, if it is a union.
pub(super) fn remaining(types: &TypeTable, ty: &Ty, seen: &[Lit]) -> Option<Ty> {
    let Ty::Union(lits) = types.resolve(ty) else {
        return None;
    };
    let rest: Vec<Lit> = lits.iter().filter(|l| !seen.contains(l)).cloned().collect();
    match rest.len() {
        0 => None,
        1 => rest.into_iter().next().map(Ty::Literal),
        _ => Some(Ty::Union(rest)),
    }
}
