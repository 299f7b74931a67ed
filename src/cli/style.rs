//! How much `flowc` prints and whether it colours it, decided once from the
//! global `--quiet`/`--verbose`/`--color` options.
//!
//! Kept process-wide (set once in `main` before any command runs) because
//! every command and the runtime's summaries consult it, and threading it
//! through each command's arguments would touch every signature for one bit.

use std::sync::OnceLock;

/// How much to print besides results and errors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verbosity {
    /// Results and errors only: no summaries, no progress.
    Quiet,
    Normal,
    /// Also the files read and timings.
    Verbose,
}

static VERBOSITY: OnceLock<Verbosity> = OnceLock::new();

/// Records the command line's choices; `color` becomes anstream's global
/// choice, so `auto` applies its rules (NO_COLOR, CLICOLOR, CLICOLOR_FORCE,
/// TERM=dumb, a terminal or not) per stream.
pub fn configure(color: anstream::ColorChoice, verbosity: Verbosity) {
    color.write_global();
    let _ = VERBOSITY.set(verbosity);
}

fn verbosity() -> Verbosity {
    VERBOSITY.get().copied().unwrap_or(Verbosity::Normal)
}

pub fn quiet() -> bool {
    verbosity() == Verbosity::Quiet
}

pub fn verbose() -> bool {
    verbosity() == Verbosity::Verbose
}

/// Whether text written to stderr should carry colour.
pub fn stderr_color() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}
