#!/usr/bin/env bash
# Tests .pre-commit-hooks.yaml with the real pre-commit framework, in a
# throwaway git repository:
#   * a clean .flow file passes;
#   * a broken .flow file fails, and the output shows flowc's diagnostic;
#   * files that are not .flow are not given to flowc.
#
# The hook under test is `flowc-check`, listed first (language: system: runs
# the flowc on PATH), fed with the binary from $FLOWC (default:
# target/release/flowc, else target/debug/flowc). With FLOWC_PRECOMMIT_RUST=1
# the `flowc-check-from-source` hook (language: rust, which makes pre-commit
# `cargo install` this repository, a release build of several minutes) is
# tested too.
#
# Prints "ok - NAME" / "FAIL - NAME" lines; exits 1 if any check failed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
here="$repo/tests/editors/precommit"

flowc="${FLOWC:-}"
if [[ -z "$flowc" ]]; then
  for candidate in "$repo/target/release/flowc" "$repo/target/debug/flowc"; do
    if [[ -x "$candidate" ]]; then flowc="$candidate"; break; fi
  done
fi
if [[ -z "$flowc" || ! -x "$flowc" ]]; then
  echo "FAIL - pre-commit: no flowc binary (set FLOWC, or build target/debug/flowc)"
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# pre-commit keeps its own cache; keep it out of the user's.
export PRE_COMMIT_HOME="${PRE_COMMIT_HOME:-$work/cache}"
export PRE_COMMIT_COLOR=never
export GIT_CONFIG_NOSYSTEM=1
# A private HOME for git's global config; cargo and rustup keep their own.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
if [[ -z "${PYENV_ROOT:-}" && -d "$HOME/.pyenv" ]]; then export PYENV_ROOT="$HOME/.pyenv"; fi
export HOME="$work/home"
mkdir -p "$HOME" "$work/bin"
git config --global user.email "test@example.invalid"
git config --global user.name "pre-commit test"
git config --global init.defaultBranch main
git config --global --add safe.directory '*'
ln -s "$(cd "$(dirname "$flowc")" && pwd)/$(basename "$flowc")" "$work/bin/flowc"
export PATH="$work/bin:$PATH"

# A hooks repository holding the work tree's .pre-commit-hooks.yaml, committed
# or not (`flowc-check` needs nothing else from this repository).
mkdir -p "$work/hooks"
git -C "$work/hooks" init -q
cp "$repo/.pre-commit-hooks.yaml" "$work/hooks/"
git -C "$work/hooks" add .pre-commit-hooks.yaml
git -C "$work/hooks" commit -q -m "hooks"

failed=0
check() { # name, command... ; on failure shows $work/out
  local name="$1"; shift
  if "$@"; then
    echo "ok - $name"
  else
    echo "FAIL - $name"
    sed 's/^/    | /' "$work/out"
    failed=1
  fi
}

new_repo() {
  rm -rf "$work/project"
  mkdir -p "$work/project"
  git -C "$work/project" init -q
}

run_hook() { # hooks repo, hook id, files... ; output in $work/out, status in $work/status
  local hooks="$1" id="$2"; shift 2
  set +e
  (cd "$work/project" && pre-commit try-repo "$hooks" "$id" --verbose --files "$@") >"$work/out" 2>&1
  echo $? >"$work/status"
  set -e
}

status() { cat "$work/status"; }

test_hook() { # hooks repo, hook id
  local hooks="$1" id="$2"

  new_repo
  cp "$here/good.flow" "$work/project/good.flow"
  git -C "$work/project" add good.flow
  run_hook "$hooks" "$id" good.flow
  check "pre-commit $id: a clean .flow file passes" \
    bash -c "[[ $(status) == 0 ]] && grep -q 'flowc check\.*Passed' '$work/out'"

  new_repo
  cp "$here/good.flow" "$work/project/good.flow"
  cp "$here/bad.flow.txt" "$work/project/bad.flow"
  git -C "$work/project" add good.flow bad.flow
  run_hook "$hooks" "$id" good.flow bad.flow
  check "pre-commit $id: a broken .flow file fails" \
    bash -c "[[ $(status) == 1 ]] && grep -q 'flowc check\.*Failed' '$work/out' && grep -q 'exit code: 1' '$work/out'"
  check "pre-commit $id: the output shows the diagnostic" \
    bash -c "grep -q 'bad.flow' '$work/out' && grep -qi 'expected' '$work/out'"

  new_repo
  printf 'not { flow at all\n' >"$work/project/notes.txt"
  git -C "$work/project" add notes.txt
  run_hook "$hooks" "$id" notes.txt
  check "pre-commit $id: files that are not .flow are skipped" \
    bash -c "[[ $(status) == 0 ]] && grep -q 'no files to check' '$work/out'"
}

# The hook listed first is the one that needs nothing built.
first_hook=$(grep -m1 '^- id:' "$repo/.pre-commit-hooks.yaml" | sed 's/^- id: *//')
first_language=$(awk '/^- id:/{n++} n==1 && /^  language:/{print $2; exit}' "$repo/.pre-commit-hooks.yaml")
check "pre-commit: the first hook ($first_hook) runs the flowc on PATH" \
  bash -c "[[ '$first_hook' == flowc-check && '$first_language' == system ]]"

test_hook "$work/hooks" flowc-check

# The same hook through a regular .pre-commit-config.yaml and `git commit`.
new_repo
cat >"$work/project/.pre-commit-config.yaml" <<YAML
repos:
  - repo: local
    hooks:
      - id: flowc-check
        name: flowc check
        entry: flowc check
        language: system
        files: \.flow\$
YAML
(cd "$work/project" && pre-commit install >/dev/null)
cp "$here/bad.flow.txt" "$work/project/bad.flow"
git -C "$work/project" add .pre-commit-config.yaml bad.flow
set +e
git -C "$work/project" commit -q -m "add a broken flow" >"$work/out" 2>&1
commit_status=$?
set -e
check "pre-commit git hook: committing a broken .flow file is refused" \
  bash -c "[[ $commit_status != 0 ]] && grep -q 'Failed' '$work/out'"
cp "$here/good.flow" "$work/project/bad.flow"
git -C "$work/project" add bad.flow
check "pre-commit git hook: committing a clean .flow file succeeds" \
  bash -c "git -C '$work/project' commit -q -m 'add a clean flow' >'$work/out' 2>&1"

if [[ "${FLOWC_PRECOMMIT_RUST:-0}" == 1 ]]; then
  # language: rust -> pre-commit runs `cargo install --path <clone>`. A clone
  # of HEAD keeps one revision, so pre-commit builds flowc once for all checks.
  rm "$work/bin/flowc"
  git clone -q --no-hardlinks "$repo" "$work/rust-hooks"
  cp "$repo/.pre-commit-hooks.yaml" "$work/rust-hooks/"
  git -C "$work/rust-hooks" commit -q -am "work tree hooks" >/dev/null 2>&1 || true
  test_hook "$work/rust-hooks" flowc-check-from-source
fi

exit "$failed"
