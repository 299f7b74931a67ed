//! `compile()`: the pipeline from paths to a checked program, in one call.

use std::path::{Path, PathBuf};

use crate::check::{check, check_sealed, CheckedProgram};
use crate::diagnostic::Problems;
use crate::exec;
use crate::loader::{LoadedModule, Loader, Workspace};
use crate::lower::lower;
use crate::snapshot::ProgramSnapshot;
use crate::source::Sources;

/// What the user asked to compile.
#[derive(Clone, Debug)]
pub enum Input {
    Path(PathBuf),
    /// Standard input, or any text with no file.
    Text {
        name: String,
        bytes: Vec<u8>,
    },
}

/// The result of a compilation: every source read, every problem found, and
/// the checked program when there were no errors.
#[derive(Debug)]
pub struct Compilation {
    pub sources: Sources,
    pub problems: Problems,
    pub program: Option<CheckedProgram>,
    /// Names of the files the user asked for, in order.
    pub roots: Vec<String>,
    /// Every module read, parsed: what a run's fingerprint hashes, so a
    /// resume does not parse its sources a second time.
    pub modules: Vec<LoadedModule>,
}

/// A file or folder that could not be read: a usage error, not a diagnostic.
#[derive(Debug)]
pub struct InputError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read {}: {}", self.path.display(), self.error)
    }
}

/// load → parse → lower → check.
pub fn compile(inputs: &[Input]) -> Result<Compilation, InputError> {
    load(Loader::new(), inputs).map(|loader| compile_workspace(loader.finish()))
}

/// [`compile`] for a caller that only reports the problems (`flowc check`):
/// the same problems, but `program` is always `None`, since nothing reads
/// the checked IR: sealing moves it instead of copying it. The sealed
/// program comes back beside, when there were no errors, for the caller
/// to drop (or, ending the process, to forget).
pub fn diagnose(inputs: &[Input]) -> Result<(Compilation, Option<exec::Program>), InputError> {
    load(Loader::new(), inputs).map(|loader| diagnose_workspace(loader.finish()))
}

/// [`compile`] of one file, keeping a copy of every file it read: the
/// program `flowc submit` stores with a run.
pub fn snapshot_and_compile(root: &Path) -> Result<(Compilation, ProgramSnapshot), InputError> {
    let loader = load(Loader::recording(), &[Input::Path(root.to_path_buf())])?;
    let snapshot = ProgramSnapshot {
        root: root.display().to_string(),
        files: loader.recorded(),
    };
    Ok((compile_workspace(loader.finish()), snapshot))
}

/// Compiles a stored program from its own files only, never the disk.
pub fn compile_snapshot(snapshot: &ProgramSnapshot) -> Result<Compilation, InputError> {
    let (loader, _) = Loader::from_snapshot(snapshot).map_err(|error| InputError {
        path: PathBuf::from(&snapshot.root),
        error,
    })?;
    Ok(compile_workspace(loader.finish()))
}

fn load(mut loader: Loader, inputs: &[Input]) -> Result<Loader, InputError> {
    for input in inputs {
        match input {
            Input::Path(p) => {
                loader.load_path(p).map_err(|error| InputError {
                    path: p.clone(),
                    error,
                })?;
            }
            Input::Text { name, bytes } => {
                loader.load_bytes(name, bytes);
            }
        }
    }
    Ok(loader)
}

/// What a compilation keeps of a program that passed every check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The [`CheckedProgram`]: its IR and its sealed program.
    Checked,
    /// Nothing: only the problems are wanted.
    Problems,
}

pub fn compile_workspace(ws: Workspace) -> Compilation {
    compile_keeping(ws, Keep::Checked).0
}

/// [`diagnose`] of a loaded workspace.
pub fn diagnose_workspace(ws: Workspace) -> (Compilation, Option<exec::Program>) {
    compile_keeping(ws, Keep::Problems)
}

fn compile_keeping(ws: Workspace, keep: Keep) -> (Compilation, Option<exec::Program>) {
    let mut found = ws.problems.clone();
    let program = lower(&ws, &mut found);
    let mut problems = Problems::default();
    // Problems found before `check` in the standard library are flowc's own bugs,
    // caught by its tests; users see their files only.
    problems.extend(
        found
            .into_iter()
            .filter(|d| !ws.sources.get(d.span.file).is_std()),
    );
    let roots = ws
        .roots
        .iter()
        .map(|&m| ws.sources.get(ws.modules[m].file).name.clone())
        .collect();
    let mut ws = ws;
    let sources = std::mem::take(&mut ws.sources);
    let (checked, sealed) = match keep {
        Keep::Checked => (check(program, &sources, &mut problems), None),
        // Sealed all the same: a fact the checker failed to prove is
        // reported here too.
        Keep::Problems => (None, check_sealed(program, &sources, &mut problems)),
    };
    let compilation = Compilation {
        sources,
        problems,
        program: checked,
        roots,
        modules: std::mem::take(&mut ws.modules),
    };
    (compilation, sealed)
}

/// Every `.flow` file under `dir`, sorted, skipping hidden folders and build output.
pub fn flow_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let kind = e.file_type()?;
            if kind.is_dir() {
                if !name.starts_with('.') && name != "node_modules" && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".flow") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
