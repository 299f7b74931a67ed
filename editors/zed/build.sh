#!/usr/bin/env bash
# Assembles a Zed dev extension for Flow in DEST (default: ./zed-flow):
#   DEST/extension.toml, DEST/languages/flow/*.scm, and DEST/grammar, a
#   local git repository holding the grammar with its generated parser
#   (Zed builds grammars from a git repository and revision).
# Then in Zed: "zed: install dev extension" and pick DEST.
# Needs the tree-sitter CLI (`cargo install tree-sitter-cli --locked`) and git.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
grammar_src="$here/../tree-sitter-flow"
dest="$(mkdir -p "${1:-zed-flow}" && cd "${1:-zed-flow}" && pwd)"

rm -rf "$dest/grammar" "$dest/languages"
mkdir -p "$dest/grammar" "$dest/languages/flow"
cp "$grammar_src/grammar.js" "$grammar_src/tree-sitter.json" "$dest/grammar/"
cp -r "$grammar_src/queries" "$dest/grammar/"
(cd "$dest/grammar" && tree-sitter generate)
git -C "$dest/grammar" init -q
git -C "$dest/grammar" add -A
git -C "$dest/grammar" -c user.name=flowc -c user.email=flowc@example.invalid commit -q -m "tree-sitter-flow"
rev="$(git -C "$dest/grammar" rev-parse HEAD)"

cp "$here/languages/flow/"* "$dest/languages/flow/"
cp "$grammar_src/queries/highlights.scm" "$dest/languages/flow/highlights.scm"
sed -e "s#@GRAMMAR_REPO@#$dest/grammar#" -e "s#@GRAMMAR_REV@#$rev#" \
  "$here/extension.toml.in" >"$dest/extension.toml"
echo "Zed extension ready in $dest (grammar rev $rev)"
