//! A run's completed steps as the store holds them: each step's key and its
//! value's JSON text, unparsed, in one buffer.
//!
//! A resume of a long run reads every completed step but parses few of
//! their values (`run::Checkpoints`): one buffer for all of them is one
//! allocation to fill and one to free, where a `String` per key and per
//! value were two each, and the bytes are kept as the store gave them
//! (whoever parses a value checks it). Beside them, the run's steps, tool
//! calls and active time its last commit carried: what a resume after a
//! crash counts of them.

use crate::run::budget::Spend;

/// The rows of `Backend::step_texts`, in the order the store gave them.
#[derive(Default)]
pub struct StepTexts {
    bytes: Vec<u8>,
    rows: Vec<Row>,
    /// The largest of the run's steps, tool calls and active time its
    /// commits carried: the figures at the last commit, as each only
    /// grows. `None` when no row carries them (none committed, or written
    /// by a flowc from before they were kept).
    counted: Option<Spend>,
}

/// Where one step's key and value are in [`StepTexts::bytes`]: the key from
/// `start` to `key_end`, the value from there to `end` (`None` when the
/// step was skipped).
#[derive(Clone, Copy)]
struct Row {
    start: usize,
    key_end: usize,
    end: Option<usize>,
}

impl StepTexts {
    /// Adds a step: its key and its value's text (`None`: skipped).
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        let end = value.map(|v| {
            self.bytes.extend_from_slice(v);
            self.bytes.len()
        });
        self.rows.push(Row {
            start,
            key_end,
            end,
        });
    }

    /// Counts a row's figures of the run's steps, tool calls and active
    /// time when it committed.
    pub fn count(&mut self, steps: u64, tool_calls: u64, wall: f64) {
        let c = self.counted.get_or_insert_with(Spend::default);
        c.steps = c.steps.max(steps);
        c.tool_calls = c.tool_calls.max(tool_calls);
        c.wall = c.wall.max(wall);
    }

    /// Adds the rows of `down`, read from the last key down while these
    /// were read up to meet them (`ReadMeeting`): those after this one's
    /// last key, in ascending order (the two reads may both have taken the
    /// rows where they met), and its counts.
    pub fn append_down(&mut self, down: StepTexts) {
        let last = self.rows.last().map(|r| r.start..r.key_end);
        for i in (0..down.len()).rev() {
            let after = match &last {
                Some(range) => down.key(i) > &self.bytes[range.clone()],
                None => true,
            };
            if after {
                self.push(down.key(i), down.value(i));
            }
        }
        if let Some(c) = down.counted {
            self.count(c.steps, c.tool_calls, c.wall);
        }
    }

    /// The run's steps, tool calls and active time at its last commit
    /// (tokens and cost 0: the run's row records those).
    pub fn counted(&self) -> Option<Spend> {
        self.counted
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `i`'s key, as the store holds it.
    pub fn key(&self, i: usize) -> &[u8] {
        let r = self.rows[i];
        &self.bytes[r.start..r.key_end]
    }

    /// Row `i`'s key as text (keys are written as text; a damaged one
    /// reads with replacement characters).
    pub fn key_text(&self, i: usize) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.key(i))
    }

    /// Row `i`'s value as the store holds it: JSON text, unchecked, or
    /// `None` for a skipped step.
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        let r = self.rows[i];
        r.end.map(|end| &self.bytes[r.key_end..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_pushed() {
        let mut texts = StepTexts::default();
        texts.push(b"chain.s1", Some(br#"{"n":1}"#));
        texts.push(b"items[2]/chain.s2", None);
        texts.push(b"chain.s3", Some(b""));
        assert_eq!(texts.len(), 3);
        assert_eq!(texts.key(0), b"chain.s1");
        assert_eq!(texts.value(0), Some(&br#"{"n":1}"#[..]));
        assert_eq!(texts.key_text(1), "items[2]/chain.s2");
        assert_eq!(texts.value(1), None);
        assert_eq!(texts.value(2), Some(&b""[..]));
    }

    #[test]
    fn rows_read_down_follow_the_rows_read_up_once_each() {
        let mut up = StepTexts::default();
        up.push(b"a", Some(b"1"));
        up.push(b"b", None);
        up.count(2, 1, 0.5);
        let mut down = StepTexts::default();
        down.push(b"d", Some(b"4"));
        down.push(b"c", Some(b"3"));
        // Taken by both reads where they met.
        down.push(b"b", None);
        down.count(4, 1, 0.25);
        up.append_down(down);
        let rows: Vec<_> = (0..up.len()).map(|i| (up.key(i), up.value(i))).collect();
        assert_eq!(
            rows,
            [
                (&b"a"[..], Some(&b"1"[..])),
                (b"b", None),
                (b"c", Some(b"3")),
                (b"d", Some(b"4"))
            ]
        );
        let c = up.counted().expect("counted");
        assert_eq!((c.steps, c.tool_calls, c.wall), (4, 1, 0.5));
        // Nothing read up: every row read down.
        let mut up = StepTexts::default();
        let mut down = StepTexts::default();
        down.push(b"b", None);
        down.push(b"a", None);
        up.append_down(down);
        assert_eq!((up.key(0), up.key(1)), (&b"a"[..], &b"b"[..]));
    }
}
