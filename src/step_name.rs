//! A step's name in a sealed program (`x`, `posted.result`): what run-store
//! keys, traces and messages name it by.
//!
//! A kept program (`program_cache.rs`) is decoded at every resume, and a
//! long flow has a name for each of its thousands of steps: one allocation
//! and copy each. There, a flow's names are kept as one text ahead of its
//! graph ([`graph`]) and each step's name is a range of that one shared
//! text. A program `check` seals gives each name a text of its own.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

#[derive(Clone)]
pub struct StepName {
    text: Arc<str>,
    start: u32,
    end: u32,
}

impl StepName {
    pub fn new(name: &str) -> StepName {
        StepName {
            text: Arc::from(name),
            start: 0,
            end: name.len() as u32,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text[self.start as usize..self.end as usize]
    }

    /// What a kept step holds until [`graph::deserialize`] names it: no
    /// text of its own.
    pub fn unset() -> StepName {
        static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
        StepName {
            text: EMPTY.clone(),
            start: 0,
            end: 0,
        }
    }
}

impl Deref for StepName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for StepName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// As the text, so a kept program reads back with the `Debug` form of the
/// program that was sealed.
impl fmt::Debug for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for StepName {
    fn eq(&self, other: &StepName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for StepName {}

impl PartialEq<str> for StepName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StepName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// As the text (traces' fields). A kept program does not encode names this
/// way: see [`graph`].
impl serde::Serialize for StepName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A graph node that has a [`StepName`] (a sealed step), for [`graph`].
pub trait Named {
    fn name(&self) -> &StepName;
    fn name_mut(&mut self) -> &mut StepName;
}

/// `#[serde(with = "crate::step_name::graph")]` for a flow's step graph
/// whose steps skip their names: the names of all its steps as one text
/// and where each ends, then the graph. Decoding it makes one shared text
/// and gives each step its range.
pub mod graph {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use petgraph::graph::DiGraph;

    use super::{Named, StepName};

    pub fn serialize<S, N, E>(g: &DiGraph<N, E>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        N: Named + Serialize,
        E: Serialize,
    {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(g.node_count());
        for node in g.node_weights() {
            text.push_str(node.name());
            ends.push(u32::try_from(text.len()).map_err(serde::ser::Error::custom)?);
        }
        (text, ends, g).serialize(s)
    }

    pub fn deserialize<'de, D, N, E>(d: D) -> Result<DiGraph<N, E>, D::Error>
    where
        D: Deserializer<'de>,
        N: Named + Deserialize<'de>,
        E: Deserialize<'de>,
    {
        let (text, ends, mut g) = <(String, Vec<u32>, DiGraph<N, E>)>::deserialize(d)?;
        if ends.len() != g.node_count() {
            return Err(D::Error::custom("a step graph with names for other steps"));
        }
        let text: std::sync::Arc<str> = text.into();
        let mut start = 0;
        for (node, end) in g.node_weights_mut().zip(ends) {
            if end < start || !text.is_char_boundary(end as usize) {
                return Err(D::Error::custom("a step name out of its text"));
            }
            *node.name_mut() = StepName {
                text: text.clone(),
                start,
                end,
            };
            start = end;
        }
        Ok(g)
    }
}
