//! The steps earlier processes of a resumed run completed, as the run store
//! holds them: by key, each value as its JSON text.
//!
//! A resume of a long run replays thousands of checkpoints and reads few of
//! their values: a replayed step's inputs are not evaluated, so only the
//! steps that run again (and the flow's result) read what came before.
//! Each text is checked to be JSON when loaded, so a damaged checkpoint
//! still stops the resume before anything runs, and parsed into a value
//! only when a step reads it (`Frame::get`). The text is shared (`Rc`), so
//! handing a checkpoint to its frame copies nothing.

use std::fmt::Write as _;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use super::step_path::StepPath;
use crate::store::StoreError;

/// A completed step's value as the run store holds it: JSON text, or
/// `None` for a step that was skipped.
pub type Checkpoint = Option<Rc<str>>;

#[derive(Default)]
pub struct Checkpoints {
    by_key: FxHashMap<String, Checkpoint>,
    /// A step path rendered for a look-up: one buffer for them all.
    key: String,
}

impl Checkpoints {
    /// The store's rows (`Backend::step_texts`), each value checked to be
    /// JSON.
    pub fn load(rows: Vec<(String, Checkpoint)>) -> Result<Checkpoints, StoreError> {
        let mut by_key = FxHashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (key, text) in rows {
            if let Some(text) = &text {
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    return Err(StoreError::Failed(format!("step {key}: {e}")));
                }
            }
            by_key.insert(key, text);
        }
        Ok(Checkpoints {
            by_key,
            key: String::new(),
        })
    }

    /// The checkpoint of step instance `path`, if an earlier process
    /// completed it.
    pub fn get(&mut self, path: &StepPath<'_>) -> Option<Checkpoint> {
        self.key.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.key, "{path}");
        self.by_key.get(self.key.as_str()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::step_path::FramePath;

    #[test]
    fn a_checkpoint_is_found_by_its_step_path_as_often_as_asked() {
        let rows = vec![
            ("chain.s1".to_string(), Some(Rc::from(r#"{"n":1}"#))),
            ("items[2]/chain.s2".to_string(), None),
        ];
        let mut done = Checkpoints::load(rows).expect("loads");
        let root = FramePath::root();
        let s1 = root.step("chain", "s1");
        for _ in 0..2 {
            assert_eq!(done.get(&s1), Some(Some(Rc::from(r#"{"n":1}"#))));
        }
        let skipped = root.iteration("items", 2);
        assert_eq!(done.get(&skipped.step("chain", "s2")), Some(None));
        assert_eq!(done.get(&root.step("chain", "s2")), None);
    }

    #[test]
    fn a_damaged_checkpoint_stops_the_load_naming_its_step() {
        let rows = vec![
            ("chain.s0".to_string(), Some(Rc::from("1"))),
            ("chain.s1".to_string(), Some(Rc::from(r#"{"n":1"#))),
        ];
        match Checkpoints::load(rows) {
            Err(StoreError::Failed(m)) => assert!(m.starts_with("step chain.s1: "), "{m}"),
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("a damaged checkpoint was loaded"),
        }
    }
}
