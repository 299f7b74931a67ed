//! The steps earlier processes of a resumed run completed, as the run store
//! holds them: by key, each value as its JSON text.
//!
//! A resume of a long run replays thousands of checkpoints and reads few of
//! their values: a replayed step's inputs are not evaluated, so only the
//! steps that run again (and the flow's result) read what came before.
//! The texts stay in the store's one buffer (`StepTexts`), shared (`Rc`)
//! by every frame a checkpoint is handed to, and a value is parsed only
//! when a step first reads it (`Frame::get`).
//!
//! A damaged checkpoint (text that is not JSON) is found when its value is
//! read: the read records the store failure `step KEY: …` (the run stops
//! as at any store failure, nothing more committed, the run left to a
//! later resume). One that no remaining step reads is never parsed: its
//! step completed, nothing needs its value, and the run finishes
//! (`flowc show` still reports it). Checking every text when loading cost
//! a tenth of a 10,000-step resume.

use std::collections::hash_map::Entry;
use std::hash::Hasher as _;
use std::rc::Rc;

use rustc_hash::{FxHashMap, FxHasher};

use super::step_path::StepPath;
use crate::store::{StepTexts, StoreError};

/// A completed step's value as the run store holds it (`None` for a step
/// that was skipped).
pub type Checkpoint = Option<Kept>;

/// A checkpointed value: row `row` of the store's texts.
#[derive(Clone)]
pub struct Kept {
    texts: Rc<StepTexts>,
    row: usize,
}

impl Kept {
    /// The value, parsed; `Err` is the store failure to stop the run with
    /// (the text is not JSON).
    pub fn parse(&self) -> Result<serde_json::Value, StoreError> {
        let text = self.texts.value(self.row).unwrap_or_default();
        serde_json::from_slice(text)
            .map_err(|e| StoreError::Failed(format!("step {}: {e}", self.texts.key_text(self.row))))
    }
}

#[derive(Default)]
pub struct Checkpoints {
    texts: Rc<StepTexts>,
    /// Row by the hash of its key. Keys are distinct, and two whose 64-bit
    /// hashes collide are not expected in practice: the later one goes to
    /// `collided`, searched in full when the first does not match.
    by_hash: FxHashMap<u64, usize>,
    collided: Vec<usize>,
    /// A step path rendered for a look-up: one buffer for them all.
    key: String,
}

fn hash(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(key);
    h.finish()
}

impl Checkpoints {
    /// The store's rows (`Backend::step_texts`).
    pub fn load(texts: StepTexts) -> Checkpoints {
        let mut by_hash = FxHashMap::with_capacity_and_hasher(texts.len(), Default::default());
        let mut collided = Vec::new();
        for row in 0..texts.len() {
            match by_hash.entry(hash(texts.key(row))) {
                Entry::Vacant(free) => {
                    free.insert(row);
                }
                Entry::Occupied(_) => collided.push(row),
            }
        }
        Checkpoints {
            texts: Rc::new(texts),
            by_hash,
            collided,
            key: String::new(),
        }
    }

    /// The checkpoint of step instance `path`, if an earlier process
    /// completed it.
    pub fn get(&mut self, path: &StepPath<'_>) -> Option<Checkpoint> {
        self.key.clear();
        path.push_key(&mut self.key);
        let key = self.key.as_bytes();
        let texts = &self.texts;
        let row = match self.by_hash.get(&hash(key)) {
            Some(&row) if texts.key(row) == key => row,
            Some(_) => *self.collided.iter().find(|&&r| texts.key(r) == key)?,
            None => return None,
        };
        Some(texts.value(row).map(|_| Kept {
            texts: texts.clone(),
            row,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::step_path::FramePath;

    fn texts(rows: &[(&str, Option<&str>)]) -> StepTexts {
        let mut texts = StepTexts::default();
        for (key, value) in rows {
            texts.push(key.as_bytes(), value.map(str::as_bytes));
        }
        texts
    }

    #[test]
    fn a_checkpoint_is_found_by_its_step_path_as_often_as_asked() {
        let mut done = Checkpoints::load(texts(&[
            ("chain.s1", Some(r#"{"n":1}"#)),
            ("items[2]/chain.s2", None),
        ]));
        let root = FramePath::root();
        let s1 = root.step("chain", "s1");
        for _ in 0..2 {
            let kept = done.get(&s1).expect("completed").expect("a value");
            assert_eq!(kept.parse().ok(), Some(serde_json::json!({"n": 1})));
        }
        let skipped = root.iteration("items", 2);
        assert!(matches!(done.get(&skipped.step("chain", "s2")), Some(None)));
        assert!(done.get(&root.step("chain", "s2")).is_none());
    }

    #[test]
    fn a_damaged_checkpoint_loads_and_fails_when_read_naming_its_step() {
        let mut done = Checkpoints::load(texts(&[
            ("chain.s0", Some("1")),
            ("chain.s1", Some(r#"{"n":1"#)),
        ]));
        let root = FramePath::root();
        let kept = done.get(&root.step("chain", "s1")).expect("completed");
        match kept.expect("a value").parse() {
            Err(StoreError::Failed(m)) => assert!(m.starts_with("step chain.s1: "), "{m}"),
            other => panic!("not a store failure: {other:?}"),
        }
        let kept = done.get(&root.step("chain", "s0")).expect("completed");
        assert_eq!(
            kept.expect("a value").parse().ok(),
            Some(serde_json::json!(1))
        );
    }
}
