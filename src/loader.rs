//! Reads source files, parses them, and follows `use` to the modules they
//! import: relative `.flow` files and the embedded standard library. It also
//! reads the JSON Schema files that `schema "…"` types name.
//!
//! Architecture invariant: this is the only stage that does IO. `lower` and
//! `check` work on the [`Workspace`] it returns.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ast::{self, Item, ModulePath, StepKind, Stmt, TypeExpr, TypeExprKind};
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::parser;
use crate::snapshot::ProgramSnapshot;
use crate::source::{unify_line_endings, FileId, Origin, SourceFile, Sources, Span};
use crate::stdlib;

#[derive(Debug)]
pub struct LoadedModule {
    pub file: FileId,
    pub ast: ast::Module,
    /// For each `use` item, in order: the module it names, if found.
    pub imports: Vec<Option<usize>>,
}

/// Everything one compilation reads.
#[derive(Debug, Default)]
pub struct Workspace {
    pub sources: Sources,
    pub modules: Vec<LoadedModule>,
    /// The modules the user asked for, as opposed to ones they import.
    pub roots: Vec<usize>,
    /// `schema "path"` files, keyed by the file that names them and the path as written.
    pub schemas: HashMap<(FileId, String), Result<serde_json::Value, String>>,
    /// MCP lock files (`NAME.mcp.lock`) beside the files that declare a
    /// `server`: `None` when there is none.
    /// `dataset "path"` files of `eval` blocks, keyed by the file that names
    /// them and the path as written: the dataset as a source of its own (so
    /// a bad row's diagnostic points at its line), or why it cannot be read.
    pub datasets: HashMap<(FileId, String), Result<FileId, String>>,
    pub mcp_locks: HashMap<FileId, Option<Result<crate::mcp::lock::LockFile, String>>>,
    pub problems: Vec<Diagnostic>,
}

#[derive(Default)]
pub struct Loader {
    ws: Workspace,
    by_key: HashMap<String, usize>,
    /// Text that stands for a file's contents (an editor's unsaved buffer),
    /// by the file's key.
    overlays: HashMap<String, Vec<u8>>,
    /// Where files come from: the disk, or only a snapshot's files.
    files: Files,
    /// Every file read from disk, by the path it was read at (`flowc
    /// submit`: what a worker on another machine compiles again).
    recorded: Option<BTreeMap<String, String>>,
}

/// Where the loader reads files from.
#[derive(Default)]
enum Files {
    /// The file system (with editor overlays on top).
    #[default]
    Disk,
    /// Only the files of a program snapshot, by the paths they were read at:
    /// a submitted run's program exactly as submitted, whatever the disk
    /// holds now (or on another machine).
    Snapshot(BTreeMap<String, String>),
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    /// A loader that keeps a copy of every file it reads from disk
    /// ([`Loader::recorded`]).
    pub fn recording() -> Loader {
        Loader {
            recorded: Some(BTreeMap::new()),
            ..Loader::default()
        }
    }

    /// A loader that reads only `snapshot`'s files (a file it lacks is
    /// missing, as on a disk without it), starting from its root.
    pub fn from_snapshot(snapshot: &ProgramSnapshot) -> std::io::Result<(Loader, usize)> {
        let mut loader = Loader {
            files: Files::Snapshot(snapshot.files.clone()),
            ..Loader::default()
        };
        let root = loader.load_path(Path::new(&snapshot.root))?;
        Ok((loader, root))
    }

    /// The files read from disk so far, by the path they were read at (a
    /// loader made with [`Loader::recording`]; empty otherwise).
    pub fn recorded(&self) -> BTreeMap<String, String> {
        self.recorded.clone().unwrap_or_default()
    }

    /// Loads a file the user named. An unreadable file is an IO error for the
    /// caller (exit status 2), not a diagnostic.
    pub fn load_path(&mut self, path: &Path) -> std::io::Result<usize> {
        let key = self.key_for(path);
        if let Some(&m) = self.by_key.get(&key) {
            self.mark_root(m);
            return Ok(m);
        }
        let bytes = self.read(path, &key)?;
        let m = self.add(
            path.display().to_string(),
            Origin::Disk(path.to_path_buf()),
            &bytes,
            key,
        );
        self.mark_root(m);
        Ok(m)
    }

    /// Loads text that has no file (standard input).
    pub fn load_bytes(&mut self, name: &str, bytes: &[u8]) -> usize {
        let m = self.add(name.to_string(), Origin::Stdin, bytes, format!("<{name}>"));
        self.mark_root(m);
        m
    }

    /// Makes `bytes` stand for the contents of `path` whenever it is loaded
    /// or imported (the language server's unsaved editor buffers).
    pub fn overlay(&mut self, path: &Path, bytes: Vec<u8>) {
        self.overlays.insert(key_for(path), bytes);
    }

    /// Every file the loader reads goes through here: an overlay, the
    /// snapshot, or the disk (recorded when recording).
    fn read(&mut self, path: &Path, key: &str) -> std::io::Result<Vec<u8>> {
        if let Files::Snapshot(files) = &self.files {
            return files
                .get(&normal_path(path))
                .map(|text| text.clone().into_bytes())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not in the submitted program",
                    )
                });
        }
        let bytes = match self.overlays.get(key) {
            Some(bytes) => bytes.clone(),
            None => std::fs::read(path)?,
        };
        if let Some(recorded) = &mut self.recorded {
            recorded.insert(
                normal_path(path),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
        Ok(bytes)
    }

    /// The key a file is known by: its canonical path on disk; in a
    /// snapshot, the path itself (the disk may not hold it).
    fn key_for(&self, path: &Path) -> String {
        match self.files {
            Files::Disk => key_for(path),
            Files::Snapshot(_) => normal_path(path),
        }
    }

    pub fn finish(self) -> Workspace {
        self.ws
    }

    fn mark_root(&mut self, m: usize) {
        if !self.ws.roots.contains(&m) {
            self.ws.roots.push(m);
        }
    }

    fn add(&mut self, name: String, origin: Origin, bytes: &[u8], key: String) -> usize {
        let (text, bad_utf8) = match std::str::from_utf8(bytes) {
            Ok(s) => (Arc::<str>::from(unify_line_endings(s).as_ref()), None),
            Err(e) => (
                Arc::<str>::from(unify_line_endings(&String::from_utf8_lossy(bytes)).as_ref()),
                Some(e.valid_up_to()),
            ),
        };
        let base_dir = match &origin {
            Origin::Disk(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => PathBuf::from("."),
        };
        let origin_path = match &origin {
            Origin::Disk(p) => Some(p.clone()),
            _ => None,
        };
        let file = self
            .ws
            .sources
            .add(SourceFile::new(name, origin, text.clone()));
        if let Some(at) = bad_utf8 {
            let width = text[at..].chars().next().map_or(0, char::len_utf8);
            self.ws.problems.push(
                Diagnostic::new(
                    Code::Syntax,
                    Span::new(file, at, at + width),
                    "this file is not valid UTF-8",
                )
                .label("invalid byte here")
                .help("Flow files are UTF-8 text; re-save the file as UTF-8"),
            );
        }
        let (module, problems) = parser::parse(file, &text);
        self.ws.problems.extend(problems);
        let index = self.ws.modules.len();
        self.by_key.insert(key, index);
        self.ws.modules.push(LoadedModule {
            file,
            ast: module,
            imports: Vec::new(),
        });
        self.read_schemas(index, &base_dir);
        self.read_datasets(index, &base_dir);
        self.read_mcp_lock(index, &origin_path);
        self.follow_imports(index, &base_dir);
        index
    }

    fn follow_imports(&mut self, index: usize, base_dir: &Path) {
        let uses: Vec<(ModulePath, Span)> = self.ws.modules[index]
            .ast
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Use(u) => Some((u.path.clone(), u.span)),
                _ => None,
            })
            .collect();
        let mut imports = Vec::with_capacity(uses.len());
        for (path, span) in uses {
            imports.push(self.import(&path, span, base_dir));
        }
        self.ws.modules[index].imports = imports;
    }

    fn import(&mut self, path: &ModulePath, span: Span, base_dir: &Path) -> Option<usize> {
        match path {
            ModulePath::Std(parts) => {
                let dotted = parts
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(&m) = self.by_key.get(&dotted) {
                    return Some(m);
                }
                match stdlib::find(&dotted) {
                    Some((name, text)) => {
                        Some(self.add(name.to_string(), Origin::Std(name), text.as_bytes(), dotted))
                    }
                    None => {
                        let known: Vec<&str> = stdlib::MODULES.iter().map(|(p, _, _)| *p).collect();
                        self.ws.problems.push(
                            Diagnostic::new(Code::UnresolvedImport, span, format!("there is no module `{dotted}`"))
                                .label("unknown module")
                                .help(format!(
                                    "the standard library has {}; a file is imported by its path in quotes, as in `use \"./shared.flow\".{{Name}}`",
                                    known.join(", ")
                                )),
                        );
                        None
                    }
                }
            }
            ModulePath::File(rel) => {
                let full = base_dir.join(rel);
                let key = self.key_for(&full);
                if let Some(&m) = self.by_key.get(&key) {
                    return Some(m);
                }
                match self.read(&full, &key) {
                    Ok(bytes) => {
                        let name = display_path(&full);
                        Some(self.add(name, Origin::Disk(full.clone()), &bytes, key))
                    }
                    Err(e) => {
                        self.ws.problems.push(
                            Diagnostic::new(
                                Code::UnresolvedImport,
                                span,
                                format!("cannot read `{rel}`: {}", io_reason(&e)),
                            )
                            .label("imported here")
                            .help(format!(
                                "the path is relative to this file's folder: {}",
                                display_path(&full)
                            )),
                        );
                        None
                    }
                }
            }
        }
    }

    /// Reads the MCP lock file beside a file that declares a server.
    fn read_mcp_lock(&mut self, index: usize, path: &Option<PathBuf>) {
        let module = &self.ws.modules[index];
        if !module
            .ast
            .items
            .iter()
            .any(|i| matches!(i, ast::Item::Server(_)))
        {
            return;
        }
        let file = module.file;
        let lock = path.as_ref().and_then(|p| {
            let lock_path = crate::mcp::lock::path_for(p);
            let key = self.key_for(&lock_path);
            match self.read(&lock_path, &key) {
                Ok(bytes) => Some(
                    crate::mcp::lock::LockFile::parse(&String::from_utf8_lossy(&bytes))
                        .map_err(|e| format!("{}: {e}", display_path(&lock_path))),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Err(format!(
                    "cannot read {}: {}",
                    display_path(&lock_path),
                    io_reason(&e)
                ))),
            }
        });
        self.ws.mcp_locks.insert(file, lock);
    }

    fn read_datasets(&mut self, index: usize, base_dir: &Path) {
        let file = self.ws.modules[index].file;
        let mut paths = Vec::new();
        for item in &self.ws.modules[index].ast.items {
            if let Item::Eval(e) = item {
                for c in &e.clauses {
                    if let ast::EvalClauseKind::Dataset { path, .. } = &c.kind {
                        paths.push(path.clone());
                    }
                }
            }
        }
        for path in paths {
            if self.ws.datasets.contains_key(&(file, path.clone())) {
                continue;
            }
            let full = base_dir.join(&path);
            let key = self.key_for(&full);
            let result = match self.read(&full, &key) {
                Ok(bytes) => match std::str::from_utf8(&bytes) {
                    Ok(text) => {
                        let text = Arc::<str>::from(unify_line_endings(text).as_ref());
                        Ok(self.ws.sources.add(SourceFile::new(
                            display_path(&full),
                            Origin::Disk(full.clone()),
                            text,
                        )))
                    }
                    Err(_) => Err(format!("{} is not UTF-8 text", display_path(&full))),
                },
                Err(e) => Err(format!(
                    "cannot read {}: {}",
                    display_path(&full),
                    io_reason(&e)
                )),
            };
            self.ws.datasets.insert((file, path), result);
        }
    }

    fn read_schemas(&mut self, index: usize, base_dir: &Path) {
        let module = &self.ws.modules[index];
        let file = module.file;
        let mut paths = Vec::new();
        for item in &module.ast.items {
            item_types(item, &mut |t| schema_paths(t, &mut paths));
        }
        for path in paths {
            if self.ws.schemas.contains_key(&(file, path.clone())) {
                continue;
            }
            let full = base_dir.join(&path);
            let key = self.key_for(&full);
            let result = self
                .read(&full, &key)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|e| format!("cannot read {}: {}", display_path(&full), io_reason(&e)))
                .and_then(|text| {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .map_err(|e| format!("{} is not JSON: {e}", display_path(&full)))
                });
            self.ws.schemas.insert((file, path), result);
        }
    }
}

fn key_for(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// A path with `.` and `..` resolved by its text alone (not the disk): the
/// name a snapshot keeps a file under.
fn normal_path(path: &Path) -> String {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// The path as a reader wants it: no `.` components.
fn display_path(path: &Path) -> String {
    let clean: PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    clean.display().to_string()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a folder".into(),
        _ => e.to_string(),
    }
}

fn schema_paths(ty: &TypeExpr, out: &mut Vec<String>) {
    match &ty.kind {
        TypeExprKind::Schema(p) => out.push(p.clone()),
        TypeExprKind::Union(ts) => ts.iter().for_each(|t| schema_paths(t, out)),
        TypeExprKind::Optional(t) | TypeExprKind::List(t) | TypeExprKind::Constrained(t, _) => {
            schema_paths(t, out)
        }
        TypeExprKind::Record(fields, _) => fields.iter().for_each(|f| schema_paths(&f.ty, out)),
        TypeExprKind::Literal(_) | TypeExprKind::Named(_) => {}
    }
}

/// Calls `f` on every type expression written in an item.
fn item_types(item: &Item, f: &mut dyn FnMut(&TypeExpr)) {
    match item {
        Item::Type(t) => f(&t.ty),
        Item::Tool(t) => {
            t.params.iter().for_each(|p| f(&p.ty));
            f(&t.output);
        }
        Item::Agent(a) => {
            a.params.iter().for_each(|p| f(&p.ty));
            f(&a.output);
        }
        Item::Flow(fl) => {
            fl.params.iter().for_each(|p| f(&p.ty));
            f(&fl.output);
            stmts_types(&fl.body, f);
        }
        _ => {}
    }
}

fn stmts_types(stmts: &[Stmt], f: &mut dyn FnMut(&TypeExpr)) {
    for s in stmts {
        if let Stmt::Let(l) = s {
            step_types(&l.step, f);
        }
    }
}

fn step_types(step: &ast::Step, f: &mut dyn FnMut(&TypeExpr)) {
    match &step.kind {
        StepKind::Llm(l) => f(&l.output),
        StepKind::For(fs) => block_types(&fs.body, f),
        StepKind::If(i) => {
            block_types(&i.then, f);
            if let Some(b) = &i.otherwise {
                block_types(b, f);
            }
        }
        StepKind::Match(m) => m.arms.iter().for_each(|a| block_types(&a.body, f)),
        _ => {}
    }
}

fn block_types(block: &ast::Block, f: &mut dyn FnMut(&TypeExpr)) {
    stmts_types(&block.stmts, f);
    step_types(&block.result, f);
}
