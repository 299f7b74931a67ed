//! `flowc fmt` on the command line: files and folders, `--check`, stdin,
//! diffs and diagnostics.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::rc::Rc;

use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Origin, SourceFile, Sources, Span};

use super::format_source;

/// `flowc fmt [--check] [PATHS…]`. Returns the exit status: 0 when every file
/// is formatted (or, with `check`, already was), 1 when a file has syntax
/// errors or, with `check`, would change. `Err` is a usage or I/O error
/// (exit status 2).
pub fn run(paths: Vec<PathBuf>, check: bool) -> Result<i32, String> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let mut files: Vec<Option<PathBuf>> = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(None);
        } else if p.is_dir() {
            let found =
                crate::flow_files(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if found.is_empty() {
                return Err(format!("no .flow files in {}", p.display()));
            }
            files.extend(found.into_iter().map(Some));
        } else if p.exists() {
            files.push(Some(p));
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    // anstream applies NO_COLOR, CLICOLOR_FORCE and the command line's
    // `--color` (its global choice) the same way for every command.
    let color = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    let mut status = 0;
    let mut io_errors = 0;
    for file in files {
        let (name, bytes) = match &file {
            None => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                ("<stdin>".to_string(), bytes)
            }
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => (path.display().to_string(), bytes),
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: cannot read {}: {e}",
                        path.display()
                    );
                    io_errors += 1;
                    continue;
                }
            },
        };
        let origin = match &file {
            None => Origin::Stdin,
            Some(p) => Origin::Disk(p.clone()),
        };
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => {
                let lossy: Rc<str> = String::from_utf8_lossy(&bytes).into();
                let at = e.valid_up_to();
                let d = Diagnostic::new(
                    Code::Syntax,
                    Span::new(FileId(0), at, at + 1),
                    "this file is not valid UTF-8",
                )
                .label("invalid byte here")
                .help("Flow files are UTF-8 text; re-save the file as UTF-8");
                report(&name, origin, &lossy, &[d], color);
                status = status.max(1);
                continue;
            }
        };
        let formatted = match format_source(text) {
            Ok(formatted) => formatted,
            Err(diagnostics) => {
                report(&name, origin, text, &diagnostics, color);
                status = status.max(1);
                continue;
            }
        };
        let changed = formatted != text;
        if check {
            if changed {
                println!("{name}");
                let _ = write!(
                    std::io::stderr(),
                    "{}",
                    diff_snippet(&name, text, &formatted)
                );
                status = status.max(1);
            }
        } else if file.is_none() {
            let mut out = std::io::stdout().lock();
            write!(out, "{formatted}")
                .and_then(|_| out.flush())
                .map_err(|e| format!("cannot write standard output: {e}"))?;
        } else if let (Some(path), true) = (&file, changed) {
            if let Err(e) = std::fs::write(path, &formatted) {
                let _ = writeln!(
                    std::io::stderr(),
                    "error: cannot write {}: {e}",
                    path.display()
                );
                io_errors += 1;
            }
        }
    }
    match io_errors {
        0 => Ok(status),
        1 => Err("1 file could not be read or written".into()),
        n => Err(format!("{n} files could not be read or written")),
    }
}

fn report(name: &str, origin: Origin, text: &str, diagnostics: &[Diagnostic], color: bool) {
    let mut sources = Sources::default();
    let file = sources.add(SourceFile::new(name.to_string(), origin, text.into()));
    let mut err = std::io::stderr().lock();
    for d in diagnostics {
        let mut d = d.clone();
        d.span.file = file;
        for l in &mut d.labels {
            l.span.file = file;
        }
        let _ = write!(err, "{}", crate::render::human(&sources, &d, color));
    }
}

/// A unified diff (as `diff -u` prints it) from the file to its formatted
/// form, with three lines of context.
fn diff_snippet(name: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (formatted)"))
        .to_string()
}
