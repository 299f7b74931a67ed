#!/usr/bin/env bash
# Tests for editor support and the pre-commit hook (editors/**, .pre-commit-hooks.yaml).
#
# Installs what is missing, then runs:
#   1. VS Code: TextMate grammar snapshot tests (vscode-tmgrammar-snap) and
#      static checks of the extension (tests/editors/vscode/check.js);
#   2. tree-sitter: `generate`, `test` (corpus + highlight assertions), the
#      queries compile, highlights cover every token without overlaps;
#   3. every .flow file in examples/ (recursively), stdlib/, tests/ and the
#      editor fixtures parses with the tree-sitter grammar (no ERROR/MISSING
#      node), except the golden files whose expected diagnostics hold a syntax
#      error (S001): those must not parse cleanly either;
#   4. Vim: filetype, options, syntax groups, indentation, and `:make` with
#      the flowc compiler filling the quickfix list (needs vim);
#   5. Neovim, headless, against `flowc lsp` on an example: the diagnostics
#      it receives (needs nvim);
#   6. pre-commit: the hooks in .pre-commit-hooks.yaml, run by pre-commit.
#
# Environment:
#   FLOWC                  flowc binary for the pre-commit test
#                          (default target/release/flowc, else target/debug/flowc,
#                          else built with `cargo build --bin flowc`)
#   FLOWC_PRECOMMIT_RUST=1 also test the `language: rust` hook (a release
#                          build of flowc by pre-commit: several minutes)
#   TREE_SITTER_CLI_VERSION  version installed when `tree-sitter` is missing
#
# Last line: "N passed, M failed" (", K skipped" when something was skipped).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

passed=0
failed=0
skipped=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1"; failed=$((failed + 1)); }
skip() { echo "skip - $1"; skipped=$((skipped + 1)); }
section() { printf '\n== %s\n' "$1"; }

# Runs a command whose output has "ok - NAME" / "FAIL - NAME" lines and counts
# them; a non-zero exit without any FAIL line counts as one failure.
tally() { # label, command...
  local label="$1"; shift
  local out="$work/tally.out" status=0
  "$@" >"$out" 2>&1 || status=$?
  cat "$out"
  local p f
  p=$(grep -c '^ok - ' "$out" || true)
  f=$(grep -c '^FAIL - ' "$out" || true)
  passed=$((passed + p))
  failed=$((failed + f))
  if [[ $status -ne 0 && $f -eq 0 ]]; then fail "$label (exit status $status)"; fi
  if [[ $status -eq 0 && $p -eq 0 && $f -eq 0 ]]; then fail "$label ran no test"; fi
}

strip_ansi() { sed 's/\x1b\[[0-9;]*m//g'; }

# ------------------------------------------------------------------ installs

section "installing what is missing"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed: run \`bash tests/setup.sh\` (Debian: apt-get install -y nodejs npm)"
  exit 2
fi
(cd editors/vscode && npm ci --no-audit --no-fund --loglevel=error)
echo "npm: editors/vscode/node_modules ready"

if ! command -v tree-sitter >/dev/null; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v tree-sitter >/dev/null; then
  echo "installing tree-sitter-cli with cargo (a few minutes)"
  cargo install tree-sitter-cli --locked --version "${TREE_SITTER_CLI_VERSION:-0.27.1}"
fi
echo "tree-sitter: $(tree-sitter --version)"

if ! command -v pre-commit >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check pre-commit
  export PATH="$(python3 -m site --user-base)/bin:$PATH"
  hash -r
fi
echo "pre-commit: $(pre-commit --version)"

flowc="${FLOWC:-}"
if [[ -z "$flowc" ]]; then
  for candidate in target/release/flowc target/debug/flowc; do
    if [[ -x "$candidate" ]]; then flowc="$repo/$candidate"; break; fi
  done
fi
if [[ -z "$flowc" ]]; then
  echo "building flowc (cargo build --bin flowc)"
  cargo build --quiet --bin flowc
  flowc="$repo/target/debug/flowc"
fi
echo "flowc: $flowc"

# ------------------------------------------------------------------ VS Code

section "VS Code: TextMate grammar"

snap_out="$work/snap.out"
snap_status=0
(cd editors/vscode && npx --no-install vscode-tmgrammar-snap \
  --grammar ./syntaxes/flow.tmLanguage.json 'test/fixtures/*.flow') >"$snap_out" 2>&1 || snap_status=$?
grep -v 'npm warn' "$snap_out" | strip_ansi | grep -v '^\s*$' | sed 's/^/    /' || true
fixtures=(editors/vscode/test/fixtures/*.flow)
for fixture in "${fixtures[@]}"; do
  rel="test/fixtures/$(basename "$fixture")"
  if [[ ! -f "$fixture.snap" ]]; then
    fail "vscode snapshot: $rel has no committed .snap"
  elif grep -q "✓ $rel run successfully" "$snap_out"; then
    ok "vscode snapshot: $rel"
  else
    fail "vscode snapshot: $rel"
  fi
done
if [[ $snap_status -ne 0 ]] && ! grep -q 'ERROR in test case' "$snap_out"; then
  fail "vscode-tmgrammar-snap exited with status $snap_status"
fi

tally "vscode checks" node tests/editors/vscode/check.js editors/vscode

# ------------------------------------------------------------------ tree-sitter

section "tree-sitter grammar"

ts_dir="$repo/editors/tree-sitter-flow"
ts_config="$work/tree-sitter-config.json"
mkdir -p "$work/parsers"
python3 - "$ts_dir/queries/highlights.scm" "$work/parsers" >"$ts_config" <<'PY'
import json, re, sys
names = sorted(set(re.findall(r"@([\w.]+)", open(sys.argv[1]).read())) - {"spell"})
print(json.dumps({"parser-directories": [sys.argv[2]], "theme": {n: "#808080" for n in names}}))
PY
ts() { (cd "$ts_dir" && tree-sitter "$@" --config-path "$ts_config"); }

if (cd "$ts_dir" && tree-sitter generate) >"$work/generate.out" 2>&1; then
  ok "tree-sitter generate"
  cat "$work/generate.out"
  ts_ok=1
else
  cat "$work/generate.out"
  fail "tree-sitter generate"
  ts_ok=0
fi

if [[ $ts_ok == 1 ]]; then
  test_status=0
  ts test >"$work/ts-test.out" 2>&1 || test_status=$?
  strip_ansi <"$work/ts-test.out" >"$work/ts-test.txt"
  sed 's/^/    /' "$work/ts-test.txt"
  corpus_ok=$(grep -cE '^\s+[0-9]+\. ✓' "$work/ts-test.txt" || true)
  corpus_fail=$(grep -cE '^\s+[0-9]+\. ✗' "$work/ts-test.txt" || true)
  passed=$((passed + corpus_ok))
  failed=$((failed + corpus_fail))
  echo "tree-sitter test: $corpus_ok passed, $corpus_fail failed"
  if [[ $test_status -ne 0 && $corpus_fail -eq 0 ]]; then fail "tree-sitter test (exit status $test_status)"; fi
  if [[ $corpus_ok -eq 0 && $corpus_fail -eq 0 ]]; then fail "tree-sitter test ran no test"; fi

  for query in highlights folds locals; do
    if ts query "queries/$query.scm" "$repo/editors/vscode/test/fixtures/flows.flow" >"$work/query.out" 2>&1 \
      && ! grep -qi 'error' "$work/query.out"; then
      ok "tree-sitter query compiles: queries/$query.scm"
    else
      sed 's/^/    /' "$work/query.out" | head -20
      fail "tree-sitter query compiles: queries/$query.scm"
    fi
  done
  # Zed's extra queries, and the highlights rewritten for Helix's scopes.
  sed -f "$repo/editors/helix/highlights.sed" "$ts_dir/queries/highlights.scm" >"$work/helix-highlights.scm"
  for query in "$repo"/editors/zed/languages/flow/*.scm "$work/helix-highlights.scm"; do
    name="${query#"$repo"/}"
    [[ "$query" == "$work/helix-highlights.scm" ]] && name="helix highlights (editors/helix/highlights.sed)"
    if ts query "$query" "$repo/editors/vscode/test/fixtures/flows.flow" >"$work/query.out" 2>&1 \
      && ! grep -qi 'error' "$work/query.out"; then
      ok "tree-sitter query compiles: $name"
    else
      sed 's/^/    /' "$work/query.out" | head -20
      fail "tree-sitter query compiles: $name"
    fi
  done
  if grep -nE '@(number|boolean|module|property|character|spell)\b|@keyword\.(import|conditional|repeat|return|modifier|type)\b|@string\.escape|@variable\.member|@function\.call' \
    "$work/helix-highlights.scm"; then
    fail "helix highlights use only Helix scopes"
  else
    ok "helix highlights use only Helix scopes"
  fi
fi

# ------------------------------------------------------------------ parse check

section "every .flow file parses with the tree-sitter grammar"

# A golden test whose expected output (NAME.stderr) reports S001 is a syntax
# error on purpose. Reserved words are not enforced by the tree-sitter grammar
# (see the head of grammar.js), so a keyword used as a name parses there.
syntax_error_expected() { # file
  local stderr="${1%.flow}.stderr"
  [[ -f "$stderr" ]] && grep -q 'S001' "$stderr"
}
ts_accepts_anyway=(tests/golden/s001_keyword_as_name.flow)

mapfile -t flow_files < <(
  { find "$repo/examples" "$repo/stdlib" -name '*.flow' -type f 2>/dev/null || true
    find "$repo/editors" "$repo/tests" -name '*.flow' -type f -not -path '*/node_modules/*'
  } | sort -u)
echo "${#flow_files[@]} files"
if [[ $ts_ok == 1 ]]; then
  clean_files=()
  for file in "${flow_files[@]}"; do
    rel="${file#"$repo"/}"
    parse_status=0
    out=$(ts parse --quiet "$file" 2>&1) || parse_status=$?
    if syntax_error_expected "$file"; then
      if [[ " ${ts_accepts_anyway[*]} " == *" $rel "* ]]; then
        continue
      elif [[ $parse_status -ne 0 || -n "$out" ]]; then
        ok "rejects (S001 expected): $rel"
      else
        fail "rejects (S001 expected): $rel parses without an error node"
      fi
      continue
    fi
    clean_files+=("$file")
    if [[ $parse_status -eq 0 && -z "$out" ]]; then
      ok "parses: $rel"
    else
      echo "$out" | sed 's/^/    /'
      fail "parses: $rel"
    fi
  done
  # Highlight queries: every token highlighted, no two patterns on one node.
  highlight_files=()
  for file in "${clean_files[@]}"; do
    case "$file" in */test/highlight/*) ;; *) highlight_files+=("$file") ;; esac
  done
  tally "highlight coverage" python3 "$ts_dir/test/check_highlights.py" \
    "$(command -v tree-sitter)" "$ts_dir" "${highlight_files[@]}"
else
  fail "parse check skipped: the grammar did not generate"
fi

# ------------------------------------------------------------------ Vim

section "Vim"

if command -v vim >/dev/null; then
  vim_out="$work/vim.out"
  # flowc on PATH for the compiler plugin's `:make`.
  PATH="$(dirname "$flowc"):$PATH" FLOW_REPO="$repo" FLOW_VIM_OUT="$vim_out" \
    vim -Nu NONE -i NONE -es -S tests/editors/vim/test.vim </dev/null >/dev/null 2>&1 || true
  if [[ -s "$vim_out" ]]; then
    tally "vim" cat "$vim_out"
  else
    fail "vim: the test script produced no result"
  fi
else
  fail "vim: vim is not installed; run \`bash tests/setup.sh\`"
fi

# ------------------------------------------------------------------ Neovim

section "Neovim: flowc lsp"

if command -v nvim >/dev/null; then
  nvim_out="$work/nvim.out"
  FLOWC="$flowc" FLOW_REPO="$repo" FLOW_NVIM_OUT="$nvim_out" \
    timeout 120 nvim --headless --clean -c 'luafile tests/editors/nvim/lsp_test.lua' </dev/null >/dev/null 2>&1 || true
  if [[ -s "$nvim_out" ]]; then
    tally "neovim" cat "$nvim_out"
  else
    fail "neovim: the LSP test script produced no result"
  fi
else
  fail "neovim: nvim is not installed; run \`bash tests/setup.sh\`"
fi

# ------------------------------------------------------------------ pre-commit

section "pre-commit"

tally "pre-commit" env FLOWC="$flowc" bash tests/editors/precommit/test.sh

# ------------------------------------------------------------------ summary

echo
summary="$passed passed, $failed failed"
if [[ $skipped -gt 0 ]]; then summary="$summary, $skipped skipped"; fi
echo "$summary"
[[ $failed -eq 0 ]]
