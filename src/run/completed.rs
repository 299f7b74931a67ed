//! The named steps a run completed, as `flow.step`, earlier processes'
//! included (a resume replays them), in one buffer: a `String` a step was
//! an allocation to make and one to free for every completed step of a
//! resumed run, a tenth of a 10,000-step resume.

/// What `Report::completed` holds: `flow.step` for each completed named
/// step, in the order they completed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Completed {
    text: String,
    /// Where each entry ends in `text`.
    ends: Vec<usize>,
}

impl Completed {
    pub fn push(&mut self, flow: &str, step: &str) {
        self.text.push_str(flow);
        self.text.push('.');
        self.text.push_str(step);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each entry, `flow.step`, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start..end])
    }

    /// Whether `step` (`flow.step`) completed.
    pub fn contains(&self, step: &str) -> bool {
        self.iter().any(|s| s == step)
    }
}

impl std::fmt::Debug for Completed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_in_order() {
        let mut done = Completed::default();
        assert!(done.is_empty());
        done.push("release", "stats");
        done.push("side", "posted.result");
        assert_eq!(done.len(), 2);
        assert_eq!(
            done.iter().collect::<Vec<_>>(),
            ["release.stats", "side.posted.result"]
        );
        assert!(done.contains("side.posted.result"));
        assert!(!done.contains("side.posted"));
        assert_eq!(
            format!("{done:?}"),
            r#"["release.stats", "side.posted.result"]"#
        );
    }
}
