//! A gate's policy (`auto approve when …`): whether it approves a case,
//! with the values it read, and whether a case it approved is sampled for
//! review after the fact (`sample …`).

use serde_json::{Map, Value};

use super::eval::{eval, Scope};
use crate::exec::{Policy, Sampling};

/// What a policy said about one case.
pub struct PolicyVerdict {
    /// True only when the condition evaluated to `true`: `false`, `null` or
    /// a value it could not read leave the case to a person.
    pub approves: bool,
    /// The values the condition read, by name (`null` for one it could not
    /// read), recorded with the decision.
    pub read: Value,
    /// Why the condition could not be evaluated, if it could not.
    pub error: Option<String>,
}

pub fn judge(policy: &Policy, scope: &dyn Scope) -> PolicyVerdict {
    let mut read = Map::new();
    for (name, e) in &policy.reads {
        read.insert(name.clone(), eval(e, scope).unwrap_or(Value::Null));
    }
    let (approves, error) = match eval(&policy.when, scope) {
        Ok(Value::Bool(b)) => (b, None),
        Ok(other) => (
            false,
            Some(format!("the condition gave {other}, not a bool")),
        ),
        Err(e) => (false, Some(e.0)),
    };
    PolicyVerdict {
        approves,
        read: Value::Object(read),
        error,
    }
}

/// Whether a policy-decided case is in the sample: a share `rate` of all
/// cases, chosen by a hash of the run and the gate instance's key (run ids
/// are random, so the choice is; the same case always gets the same
/// answer, so a resume never samples it twice). The daily cap is the
/// store's to enforce.
pub fn in_sample(sampling: &Sampling, run_id: &str, key: &str) -> bool {
    if sampling.rate >= 1.0 {
        return true;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_id.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The top 53 bits as a number in [0, 1).
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit < sampling.rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_samples_about_that_share() {
        let s = Sampling {
            rate: 0.02,
            per_day: None,
        };
        let n = (0..20_000)
            .filter(|i| in_sample(&s, &format!("run-{i}"), "refund"))
            .count();
        assert!((300..=500).contains(&n), "{n} of 20000 sampled at 2%");
        let all = Sampling {
            rate: 1.0,
            per_day: Some(3),
        };
        assert!(in_sample(&all, "r", "k"));
    }
}
