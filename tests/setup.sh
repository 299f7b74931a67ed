#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from the
# package registries only (Debian, npm, PyPI, crates.io), and reuses what is
# already installed. Idempotent: run it as often as you like.
#
# Every need is one function below; a test that finds its tool missing fails
# with a message naming this script. Tools installed under the repository
# (npm packages, Python virtualenvs) go to target/test-tools/, which
# `cargo clean` removes and git ignores.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/target/test-tools"
mkdir -p "$tools"

apt_updated=0
apt_install() { # packages... (only the missing ones are installed)
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/setup.sh: missing Debian packages ${missing[*]} and no apt-get here" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ $apt_updated -eq 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  echo "setup: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Graphviz (`dot -Tsvg` in the graph tests) and Vim (editor tests).
need_graphviz_vim() { apt_install graphviz vim; }

# npm packages into target/test-tools/NAME (one folder per need, reused).
npm_install() { # folder package...
  local dir="$tools/$1"; shift
  mkdir -p "$dir"
  local missing=0
  for p in "$@"; do
    [ -d "$dir/node_modules/${p%@*}" ] || missing=1
  done
  [ $missing -eq 0 ] && return 0
  echo "setup: npm install $* (into $dir)"
  (cd "$dir" && npm install --no-audit --no-fund --silent "$@" >/dev/null)
}

# The MCP reference server (tests/mcp.rs): `npx --no-install
# mcp-server-everything stdio` from target/test-tools/mcp-everything.
need_mcp_everything() { npm_install mcp-everything @modelcontextprotocol/server-everything; }

# GitHub's OpenAPI description served by Prism (tests/github_review.rs):
# `prism mock SPEC -h 127.0.0.1 -p PORT` from target/test-tools/prism.
need_prism_github() { npm_install prism @stoplight/prism-cli @octokit/openapi; }

# An OTLP/HTTP receiver for the export tests (tests/otlp_receiver.py):
# PyPI `opentelemetry-proto` (and the protobuf runtime it brings) in a
# virtualenv at target/test-tools/otlp-venv.
need_otlp_receiver() {
  local venv="$tools/otlp-venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
    return 0
  fi
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  echo "setup: pip install opentelemetry-proto into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'opentelemetry-proto>=1.20,<2'
}

# `patch` applies `flowc fmt --check`'s diff (tests/authoring.rs); Neovim
# runs headless against `flowc lsp` (tests/editors/run.sh).
need_patch_neovim() { apt_install patch neovim; }

# PostgreSQL (the run store's second backend): the tests start their own
# private server from /usr/lib/postgresql/*/bin (initdb, pg_ctl); nothing
# needs to be running.
need_postgresql() { apt_install postgresql; }

# The web inbox's browser test (tests/serve.rs, tests/browser/inbox.mjs):
# Debian's Chromium, driven headless by `playwright-core` (the library only:
# it downloads no browser of its own) from target/test-tools/playwright.
need_chromium_playwright() {
  apt_install chromium
  npm_install playwright playwright-core
}

need_graphviz_vim
need_patch_neovim
need_mcp_everything
need_prism_github
need_otlp_receiver
need_postgresql
need_chromium_playwright
echo "setup: done (tools in $tools)"
