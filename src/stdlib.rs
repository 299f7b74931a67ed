//! The standard library: `.flow` modules embedded in the binary, so a
//! program checks and runs the same everywhere.

/// `(module path, file name, source)`.
pub const MODULES: &[(&str, &str, &str)] = &[
    (
        "std.models",
        "std/models.flow",
        include_str!("../stdlib/models.flow"),
    ),
    (
        "std.tools",
        "std/tools.flow",
        include_str!("../stdlib/tools.flow"),
    ),
];

pub fn find(path: &str) -> Option<(&'static str, &'static str)> {
    MODULES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, name, text)| (*name, *text))
}
