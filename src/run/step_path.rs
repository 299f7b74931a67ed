//! Where a step instance is in a run, as a type.
//!
//! One step of a flow runs many times in one run: once per loop iteration,
//! once per call of its flow. [`FramePath`] says which instance of a region
//! a frame is (the chain of loops and flow calls that opened it) and
//! [`StepPath`] names one step instance in it. The same value gives the
//! run-store key, the trace's `path` field and the idempotency key's
//! location, each rendered by `Display` at the boundary; nothing in flowc
//! parses the text back.
//!
//! The text is part of the run store's format (a resumed run finds its
//! checkpoints by it) and of every idempotency key already sent, so it does
//! not change: `order[2]/review>post/post.send#fallback`.

use std::fmt;
use std::rc::Rc;

/// Which instance of a region a frame is: the loop iterations and flow calls
/// that opened it, outermost first. Empty for a run's root flow. Cloning is
/// cheap (a shared chain, as frames nest).
#[derive(Clone, Default)]
pub struct FramePath(Option<Rc<Opened>>);

/// One step of the chain: a step that opened a frame, and how.
struct Opened {
    outer: FramePath,
    step: Rc<str>,
    by: OpenedBy,
}

enum OpenedBy {
    /// An iteration of a `for` loop step: `step[index]`.
    Iteration(usize),
    /// A call of another flow: `step>callee`.
    Call(Rc<str>),
}

impl FramePath {
    /// The root frame of a run.
    pub fn root() -> FramePath {
        FramePath(None)
    }

    /// The frame of iteration `index` of loop step `step`, inside this one.
    pub fn iteration(&self, step: &str, index: usize) -> FramePath {
        self.open(step, OpenedBy::Iteration(index))
    }

    /// The frame of flow `callee`, called by step `step` of this one.
    pub fn call(&self, step: &str, callee: &str) -> FramePath {
        self.open(step, OpenedBy::Call(callee.into()))
    }

    fn open(&self, step: &str, by: OpenedBy) -> FramePath {
        FramePath(Some(Rc::new(Opened {
            outer: self.clone(),
            step: step.into(),
            by,
        })))
    }

    /// Step `step` of flow `flow` in this frame.
    pub fn step<'a>(&self, flow: &'a str, step: &'a str) -> StepPath<'a> {
        StepPath {
            frame: self.clone(),
            flow,
            step,
            fallback: false,
            model: None,
            agent_call: None,
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Display for FramePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(opened) = &self.0 else {
            return Ok(());
        };
        if !opened.outer.is_root() {
            write!(f, "{}/", opened.outer)?;
        }
        match &opened.by {
            OpenedBy::Iteration(i) => write!(f, "{}[{i}]", opened.step),
            OpenedBy::Call(callee) => write!(f, "{}>{callee}", opened.step),
        }
    }
}

impl fmt::Debug for FramePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FramePath({self})")
    }
}

/// One step instance of a run, or a part of it that is recorded on its own.
#[derive(Clone)]
pub struct StepPath<'a> {
    frame: FramePath,
    flow: &'a str,
    step: &'a str,
    /// The call the step's `fallback` makes, not the step's own.
    fallback: bool,
    /// A model's replies to the call, recorded before the step completes.
    model: Option<&'a str>,
    /// A tool call an agent made in one of its turns.
    agent_call: Option<AgentCall<'a>>,
}

#[derive(Clone)]
struct AgentCall<'a> {
    agent: &'a str,
    turn: u64,
    /// The id the model gave the call (unique within its reply).
    id: Rc<str>,
}

impl<'a> StepPath<'a> {
    /// The frame the step is in.
    pub fn frame(&self) -> &FramePath {
        &self.frame
    }

    /// The step's name in its flow.
    pub fn step_name(&self) -> &'a str {
        self.step
    }

    /// Appends the path as `Display` renders it (the run-store key). A step
    /// of the root frame, the common case, is three strings pushed: a
    /// resume looks up every completed step by its key, and the formatting
    /// machinery was a twentieth of a 10,000-step resume.
    pub fn push_key(&self, out: &mut String) {
        if self.frame.is_root()
            && !self.fallback
            && self.model.is_none()
            && self.agent_call.is_none()
        {
            out.push_str(self.flow);
            out.push('.');
            out.push_str(self.step);
        } else {
            // Writing to a String cannot fail.
            let _ = fmt::Write::write_fmt(out, format_args!("{self}"));
        }
    }

    /// The call this step's `fallback` makes.
    pub fn fallback(&self) -> StepPath<'a> {
        StepPath {
            fallback: true,
            ..self.clone()
        }
    }

    /// Tool call `id` that agent `agent` made in turn `turn` of this step.
    pub fn agent_call(&self, agent: &'a str, turn: u64, id: &str) -> StepPath<'a> {
        StepPath {
            agent_call: Some(AgentCall {
                agent,
                turn,
                id: id.into(),
            }),
            ..self.clone()
        }
    }

    /// Where the step instance is as a call's idempotency key names it:
    /// `orders[2]/send`, or `orders[2]/send@triage#3` for the tools agent
    /// `triage` calls in turn 3. It leaves out what may differ between two
    /// attempts of one effect: whether a fallback made the call, and the id
    /// a model gave a tool call (a resumed agent asks its model again).
    pub fn idempotency_location(&self) -> impl fmt::Display + '_ {
        IdempotencyLocation(self)
    }

    /// The replies of model `model` to this step's call.
    pub fn reply(&self, model: &'a str) -> StepPath<'a> {
        StepPath {
            model: Some(model),
            ..self.clone()
        }
    }
}

impl fmt::Display for StepPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.frame.is_root() {
            write!(f, "{}/", self.frame)?;
        }
        write!(f, "{}.{}", self.flow, self.step)?;
        if self.fallback {
            f.write_str("#fallback")?;
        }
        if let Some(model) = self.model {
            write!(f, "@{model}")?;
        }
        match &self.agent_call {
            Some(c) => write!(f, "@{}#{}:{}", c.agent, c.turn, c.id),
            None => Ok(()),
        }
    }
}

struct IdempotencyLocation<'p>(&'p StepPath<'p>);

impl fmt::Display for IdempotencyLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0;
        write!(f, "{}/{}", path.frame, path.step)?;
        match &path.agent_call {
            Some(c) => write!(f, "@{}#{}", c.agent, c.turn),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for StepPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_the_run_store_has_always_keyed_them() {
        let root = FramePath::root();
        assert_eq!(root.step("main", "fetch").to_string(), "main.fetch");
        let item = root.iteration("orders", 2);
        let call = item.call("review", "post");
        assert_eq!(call.to_string(), "orders[2]/review>post");
        let send = call.step("post", "send");
        assert_eq!(send.to_string(), "orders[2]/review>post/post.send");
        assert_eq!(
            send.fallback().to_string(),
            "orders[2]/review>post/post.send#fallback"
        );
        assert_eq!(
            send.reply("fast").to_string(),
            "orders[2]/review>post/post.send@fast"
        );
        let agent_call = send.agent_call("helper", 3, "call_7");
        assert_eq!(
            agent_call.to_string(),
            "orders[2]/review>post/post.send@helper#3:call_7"
        );
        assert_eq!(
            agent_call.idempotency_location().to_string(),
            "orders[2]/review>post/send@helper#3"
        );
        // `push_key` appends what `Display` renders, on every path.
        for path in [
            root.step("main", "fetch"),
            send.clone(),
            send.fallback(),
            root.step("main", "fetch").reply("fast"),
            agent_call.clone(),
        ] {
            let mut key = String::from("kept ");
            path.push_key(&mut key);
            assert_eq!(key, format!("kept {path}"));
        }
        // A root step's location keeps the leading `/` keys always had.
        assert_eq!(
            root.step("main", "send").idempotency_location().to_string(),
            "/send"
        );
    }
}
