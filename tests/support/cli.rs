//! A fluent builder for one run of the real `flowc` binary, so a new CLI
//! case is a few lines:
//!
//! ```ignore
//! Test::new()
//!     .file("a.flow", "flow f() -> string { return x }")
//!     .args(["check", "--format", "short", "a.flow"])
//!     .stdout("a.flow:1:29: error[N001]: …\n")
//!     .status(1)
//!     .run();
//! ```
//!
//! Each test gets a fresh folder (under the target's temporary directory,
//! removed when the outcome is dropped) as its working directory, unless
//! `.in_repo()` runs it from the repository root to reach `examples/`.
//! Colour variables from the caller's environment are removed so output is
//! the same in a terminal and in CI. Expectations left unset are not checked;
//! the exit status is expected to be 0 unless `.status(n)` says otherwise.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// What a stream is expected to hold.
enum Expect {
    Exactly(String),
    Contains(Vec<String>),
}

pub struct Test {
    dir: TempDir,
    cwd: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    stdout: Option<Expect>,
    stderr: Option<Expect>,
    status: Option<i32>,
}

/// The result of a run whose expectations held.
pub struct Outcome {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    dir: TempDir,
}

impl Outcome {
    /// The test's folder (files the command wrote are there).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    /// A run in a fresh, empty folder.
    pub fn new() -> Test {
        Test {
            dir: TempDir::new(),
            cwd: None,
            args: Vec::new(),
            env: vec![
                ("NO_COLOR".into(), None),
                ("CLICOLOR_FORCE".into(), None),
                ("CLICOLOR".into(), None),
                ("FLOWC_STORE".into(), None),
            ],
            stdin: None,
            stdout: None,
            stderr: None,
            status: None,
        }
    }

    /// Runs from the repository root (for `examples/`, `stdlib/`); files
    /// written with `.file` still go to the test's own folder, reachable as
    /// `.path(name)`.
    pub fn in_repo(mut self) -> Test {
        self.cwd = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        self
    }

    /// Writes a file (folders created) in the test's folder.
    pub fn file(self, name: &str, contents: &str) -> Test {
        let path = self.dir.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the file's folder");
        }
        std::fs::write(&path, contents).expect("write the test file");
        self
    }

    /// The absolute path of a file in the test's folder.
    pub fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Test {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Test {
        self.stdin = Some(input.into());
        self
    }

    /// Standard output must be exactly this.
    pub fn stdout(mut self, expected: &str) -> Test {
        self.stdout = Some(Expect::Exactly(expected.into()));
        self
    }

    /// Standard output must contain this (may be given several times).
    pub fn stdout_has(mut self, part: &str) -> Test {
        self.stdout = Some(add_part(self.stdout.take(), part));
        self
    }

    /// Standard error must be exactly this.
    pub fn stderr(mut self, expected: &str) -> Test {
        self.stderr = Some(Expect::Exactly(expected.into()));
        self
    }

    /// Standard error must contain this (may be given several times).
    pub fn stderr_has(mut self, part: &str) -> Test {
        self.stderr = Some(add_part(self.stderr.take(), part));
        self
    }

    /// The expected exit status (0 when not given).
    pub fn status(mut self, code: i32) -> Test {
        self.status = Some(code);
        self
    }

    /// Runs `flowc` and checks every expectation; panics with the whole
    /// output when one does not hold.
    pub fn run(self) -> Outcome {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowc"));
        command
            .args(&self.args)
            .current_dir(self.cwd.as_deref().unwrap_or(&self.dir.0))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &self.env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        let mut child = command.spawn().expect("flowc starts");
        if let Some(input) = &self.stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            // flowc may exit before reading everything; that is its answer.
            let _ = pipe.write_all(input);
        }
        let output = child.wait_with_output().expect("flowc exits");
        let outcome = Outcome {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            dir: self.dir,
        };
        let shown = || {
            format!(
                "flowc {}\n--- status {:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                outcome.status,
                outcome.stdout,
                outcome.stderr
            )
        };
        let want = self.status.unwrap_or(0);
        assert_eq!(outcome.status, Some(want), "exit status\n{}", shown());
        for (name, expect, actual) in [
            ("stdout", &self.stdout, &outcome.stdout),
            ("stderr", &self.stderr, &outcome.stderr),
        ] {
            match expect {
                None => {}
                Some(Expect::Exactly(text)) => {
                    assert_eq!(actual, text, "{name} differs\n{}", shown())
                }
                Some(Expect::Contains(parts)) => {
                    for part in parts {
                        assert!(
                            actual.contains(part.as_str()),
                            "{name} lacks {part:?}\n{}",
                            shown()
                        );
                    }
                }
            }
        }
        outcome
    }
}

fn add_part(expect: Option<Expect>, part: &str) -> Expect {
    match expect {
        Some(Expect::Contains(mut parts)) => {
            parts.push(part.into());
            Expect::Contains(parts)
        }
        _ => Expect::Contains(vec![part.into()]),
    }
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
