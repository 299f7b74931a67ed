//! Links the `flowc` binary as a position-dependent executable on Linux.
//!
//! A position-independent executable is relocated by the dynamic loader at
//! every start: on this project's build, 38,000 relocations, and every page
//! of `.data.rel.ro` (620 KiB of vtables and static tables) written, so
//! copied, before `main`. That was 140 of the 410 page faults of a `flowc
//! check` of an empty file, and 15% of its time; `flowc check` runs in
//! editors and pre-commit hooks, where start-up is most of the work. Linked
//! at a fixed address, the executable needs none of it (Go links its
//! binaries this way by default).
//!
//! The cost is that the executable's own code and data are at the same
//! address in every process (shared libraries, the heap and the stacks are
//! still randomised). Set `FLOWC_PIE=1` when building to keep a
//! position-independent executable.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FLOWC_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let pie = std::env::var_os("FLOWC_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux && !pie {
        // Only the binaries: the library's code is still compiled
        // position-independent, which a fixed-address link accepts.
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
