//! Who is asking: bearer tokens, each mapped to a reviewer name and
//! optionally restricted to flows and gates.
//!
//! The tokens come from `--tokens FILE` or, without it, from the
//! `FLOWC_SERVE_TOKENS` variable, in one JSON format:
//!
//! ```json
//! {"reviewers": [
//!   {"name": "alice", "token_env": "ALICE_TOKEN"},
//!   {"name": "bob", "token": "…", "flows": ["refund"], "gates": ["approve_refund"]}
//! ]}
//! ```
//!
//! A request carries its token as `Authorization: Bearer TOKEN` (the API)
//! or in the `flowc_token` cookie the login page sets (the pages). With no
//! tokens configured (only allowed on a loopback address) everyone who can
//! connect is the OS user who started serve, as with `flowc approve`.

use std::collections::BTreeSet;
use std::path::Path;

use axum::http::HeaderMap;
use serde::Deserialize;

/// The name of the cookie the login page sets.
pub(super) const COOKIE: &str = "flowc_token";

/// Tokens shorter than this are refused: a token is a password.
const MIN_TOKEN_LEN: usize = 16;

/// A reviewer: who decisions are recorded as, and what they may see and decide.
#[derive(Clone, Debug)]
pub(super) struct Reviewer {
    pub name: String,
    /// `None`: every flow.
    pub flows: Option<BTreeSet<String>>,
    /// `None`: every gate of the flows above.
    pub gates: Option<BTreeSet<String>>,
}

impl Reviewer {
    /// Whether the reviewer may see runs of `flow`.
    pub fn sees(&self, flow: &str) -> bool {
        self.flows.as_ref().is_none_or(|f| f.contains(flow))
    }

    /// Whether the reviewer may decide gate `gate` of flow `flow`.
    pub fn decides(&self, flow: &str, gate: &str) -> bool {
        self.sees(flow) && self.gates.as_ref().is_none_or(|g| g.contains(gate))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    reviewers: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    token: Option<String>,
    token_env: Option<String>,
    flows: Option<Vec<String>>,
    gates: Option<Vec<String>>,
}

/// The configured tokens.
pub(super) struct Tokens(Vec<(String, Reviewer)>);

impl Tokens {
    /// Reads `--tokens FILE`, else `FLOWC_SERVE_TOKENS`; `None` when
    /// neither is given. A malformed file is an error naming what is wrong.
    pub fn load(file: Option<&Path>) -> Result<Option<Tokens>, String> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                path.display().to_string(),
            ),
            None => match std::env::var("FLOWC_SERVE_TOKENS") {
                Ok(text) if !text.trim().is_empty() => (text, "FLOWC_SERVE_TOKENS".to_string()),
                _ => return Ok(None),
            },
        };
        Tokens::parse(&text, &|name| std::env::var(name).ok())
            .map(Some)
            .map_err(|e| format!("{origin}: {e}"))
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Tokens, String> {
        let file: File = serde_json::from_str(text).map_err(|e| {
            format!("not a token file ({e}); expected {{\"reviewers\": [{{\"name\": …, \"token_env\": …}}]}}")
        })?;
        if file.reviewers.is_empty() {
            return Err("no reviewers".into());
        }
        let mut tokens: Vec<(String, Reviewer)> = Vec::new();
        for e in file.reviewers {
            if e.name.trim().is_empty() {
                return Err("a reviewer has an empty name".into());
            }
            let token = match (e.token, e.token_env) {
                (Some(t), None) => t,
                (None, Some(var)) => env(&var).ok_or_else(|| {
                    format!("reviewer `{}`: the variable {var} is not set", e.name)
                })?,
                _ => {
                    return Err(format!(
                        "reviewer `{}`: give exactly one of `token` and `token_env`",
                        e.name
                    ))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "reviewer `{}`: the token is shorter than {MIN_TOKEN_LEN} characters",
                    e.name
                ));
            }
            if tokens.iter().any(|(t, _)| *t == token) {
                return Err(format!(
                    "reviewer `{}`: the token is another reviewer's",
                    e.name
                ));
            }
            let set = |list: Option<Vec<String>>| list.map(|l| l.into_iter().collect());
            tokens.push((
                token,
                Reviewer {
                    name: e.name,
                    flows: set(e.flows),
                    gates: set(e.gates),
                },
            ));
        }
        Ok(Tokens(tokens))
    }

    /// The reviewer a token belongs to. Every token is compared in full, in
    /// time that does not depend on where they differ.
    fn find(&self, given: &str) -> Option<&Reviewer> {
        let mut found = None;
        for (token, reviewer) in &self.0 {
            if same(token.as_bytes(), given.as_bytes()) {
                found = Some(reviewer);
            }
        }
        found
    }
}

/// Constant-time equality (for equal lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How requests are authenticated.
pub(super) enum Auth {
    /// No tokens: a loopback service, everyone is `local`.
    Open {
        local: Reviewer,
    },
    Tokens(Tokens),
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No token given.
    Missing,
    /// A token no reviewer has.
    Unknown,
}

impl Auth {
    pub fn new(tokens: Option<Tokens>) -> Auth {
        match tokens {
            Some(t) => Auth::Tokens(t),
            None => Auth::Open {
                local: Reviewer {
                    name: crate::run::os_user(),
                    flows: None,
                    gates: None,
                },
            },
        }
    }

    /// For the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Auth::Open { local } => format!("no tokens: every request is {}", local.name),
            Auth::Tokens(t) => format!("{} reviewer tokens", t.0.len()),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open { .. })
    }

    /// The reviewer a request speaks for: its bearer token, else its cookie.
    pub fn reviewer(&self, headers: &HeaderMap) -> Result<Reviewer, Refusal> {
        let tokens = match self {
            Auth::Open { local } => return Ok(local.clone()),
            Auth::Tokens(t) => t,
        };
        let token = bearer(headers)
            .or_else(|| cookie(headers))
            .ok_or(Refusal::Missing)?;
        tokens.find(&token).cloned().ok_or(Refusal::Unknown)
    }

    /// The reviewer a token belongs to (the login form).
    pub fn check(&self, token: &str) -> Option<Reviewer> {
        match self {
            Auth::Open { local } => Some(local.clone()),
            Auth::Tokens(t) => t.find(token.trim()).cloned(),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, String> {
        Tokens::parse(text, &|name| {
            (name == "T").then(|| "from-the-environment-1".into())
        })
    }

    #[test]
    fn a_token_file_maps_tokens_to_reviewers_with_their_scopes() {
        let t = parse(
            r#"{"reviewers": [{"name": "alice", "token_env": "T"},
               {"name": "bob", "token": "bob-token-0123456789", "flows": ["refund"], "gates": ["ok"]}]}"#,
        )
        .expect("parses");
        assert_eq!(
            t.find("from-the-environment-1").map(|r| r.name.as_str()),
            Some("alice")
        );
        let bob = t.find("bob-token-0123456789").expect("bob");
        assert!(bob.sees("refund") && !bob.sees("other"));
        assert!(bob.decides("refund", "ok") && !bob.decides("refund", "other"));
        assert!(t.find("bob-token-012345678").is_none());
        assert!(t.find("").is_none());
    }

    #[test]
    fn a_bad_token_file_says_what_is_wrong() {
        for (text, says) in [
            ("nope", "not a token file"),
            (r#"{"reviewers": []}"#, "no reviewers"),
            (r#"{"reviewers": [{"name": "a"}]}"#, "exactly one of"),
            (
                r#"{"reviewers": [{"name": "a", "token_env": "UNSET"}]}"#,
                "UNSET is not set",
            ),
            (
                r#"{"reviewers": [{"name": "a", "token": "short"}]}"#,
                "shorter than 16",
            ),
            (
                r#"{"reviewers": [{"name": "", "token": "0123456789abcdef"}]}"#,
                "empty name",
            ),
            (
                r#"{"reviewers": [{"name": "a", "token": "0123456789abcdef", "flow": []}]}"#,
                "unknown field",
            ),
            (
                r#"{"reviewers": [{"name": "a", "token": "0123456789abcdef"}, {"name": "b", "token": "0123456789abcdef"}]}"#,
                "another reviewer's",
            ),
        ] {
            let e = parse(text).err().unwrap_or_else(|| panic!("{text} parses"));
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
