#!/usr/bin/env bash
# The whole test suite, on a fresh machine with the Rust toolchain, Python,
# Node.js and Debian's package manager: installs what the tests need
# (tests/setup.sh), then runs `cargo test` and the editor/pre-commit suite.
# `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/setup.sh
cargo test --locked
cargo build --release --locked --bin flowc
FLOWC="$PWD/target/release/flowc" bash tests/editors/run.sh
