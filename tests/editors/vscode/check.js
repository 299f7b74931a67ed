#!/usr/bin/env node
// Static checks of the VS Code extension in editors/vscode, run by
// tests/editors/run.sh after `npm ci` there. Prints "ok - NAME" / "FAIL - NAME".
//
//  * package.json contributes language `flow` for *.flow with the grammar and
//    language configuration it points at;
//  * language-configuration.json has `//` comments, brackets, auto-closing
//    quotes and folding markers;
//  * the grammar is well formed: every regex compiles with Oniguruma (what
//    VS Code uses) and every `#include` names a repository rule;
//  * the snapshot fixtures exercise every scope the grammar can produce.
'use strict';

const fs = require('fs');
const path = require('path');

const ext = path.resolve(process.argv[2] || path.join(__dirname, '../../../editors/vscode'));
const req = (m) => require(require.resolve(m, { paths: [ext] }));

let failed = 0;
function check(name, fn) {
  let why;
  try {
    why = fn();
  } catch (e) {
    why = e.message;
  }
  if (why) {
    failed++;
    console.log(`FAIL - ${name}: ${why}`);
  } else {
    console.log(`ok - ${name}`);
  }
}

const pkg = JSON.parse(fs.readFileSync(path.join(ext, 'package.json'), 'utf8'));
const lang = (pkg.contributes.languages || []).find((l) => l.id === 'flow');
const gram = (pkg.contributes.grammars || []).find((g) => g.language === 'flow');

check('vscode: package.json contributes language flow for *.flow', () => {
  if (!lang) return 'no language with id "flow"';
  if (!(lang.extensions || []).includes('.flow')) return 'extensions do not include .flow';
  if (!gram) return 'no grammar for language flow';
  if (gram.scopeName !== 'source.flow') return `scopeName is ${gram.scopeName}`;
  if (!fs.existsSync(path.join(ext, gram.path))) return `missing ${gram.path}`;
  if (!fs.existsSync(path.join(ext, lang.configuration))) return `missing ${lang.configuration}`;
  return '';
});

// The language client: `flowc lsp` started with the binary from the
// `flowc.path` setting. extension.js is loaded with a stand-in `vscode`
// module, and the client it builds is inspected without starting a server.
check('vscode: the extension starts flowc lsp from the flowc.path setting', () => {
  if (pkg.main !== './extension.js' || !fs.existsSync(path.join(ext, 'extension.js'))) return 'no ./extension.js main';
  if (!(pkg.activationEvents || []).includes('onLanguage:flow')) return 'not activated on language flow';
  const setting = pkg.contributes.configuration && pkg.contributes.configuration.properties['flowc.path'];
  if (!setting || setting.default !== 'flowc') return 'no flowc.path setting defaulting to flowc';
  if (!(pkg.dependencies || {})['vscode-languageclient']) return 'vscode-languageclient is not a dependency';
  const Module = require('module');
  const created = [];
  const fakeVscode = {
    workspace: {
      getConfiguration: (section) => ({ get: (key) => (section === 'flowc' && key === 'path' ? '/opt/flowc/bin/flowc' : undefined) }),
      onDidChangeConfiguration: () => ({ dispose() {} }),
    },
    window: { showErrorMessage: () => {} },
  };
  const fakeClient = {
    TransportKind: { stdio: 0 },
    LanguageClient: function (id, name, server, client) {
      created.push({ id, server, client });
      this.start = () => Promise.resolve();
      this.stop = () => Promise.resolve();
    },
  };
  const load = Module._load;
  Module._load = function (request, ...rest) {
    if (request === 'vscode') return fakeVscode;
    if (request === 'vscode-languageclient/node') return fakeClient;
    return load.call(this, request, ...rest);
  };
  try {
    const extension = require(path.join(ext, 'extension.js'));
    extension.activate({ subscriptions: [] });
  } finally {
    Module._load = load;
  }
  if (created.length !== 1) return `${created.length} clients created`;
  const { server, client } = created[0];
  if (server.run.command !== '/opt/flowc/bin/flowc' || server.run.args.join(' ') !== 'lsp') return `runs ${JSON.stringify(server.run)}`;
  if (client.documentSelector[0].language !== 'flow') return 'not for language flow';
  // The real client library is installed (npm ci) and loads.
  if (!fs.existsSync(path.join(ext, 'node_modules', 'vscode-languageclient', 'node.js'))) return 'vscode-languageclient is not installed (npm ci)';
  return '';
});

check('vscode: language-configuration.json', () => {
  const conf = JSON.parse(fs.readFileSync(path.join(ext, lang.configuration), 'utf8'));
  if (conf.comments.lineComment !== '//') return 'lineComment is not //';
  const pairs = (conf.brackets || []).map((b) => b.join(''));
  for (const b of ['{}', '[]', '()']) if (!pairs.includes(b)) return `bracket ${b} missing`;
  const closing = (conf.autoClosingPairs || []).map((p) => p.open + p.close);
  for (const b of ['{}', '[]', '()', '""']) if (!closing.includes(b)) return `auto-closing ${b} missing`;
  const m = conf.folding && conf.folding.markers;
  if (!m || !new RegExp(m.start).test('// region budget') || !new RegExp(m.end).test('  // endregion')) {
    return 'folding markers do not match // region / // endregion';
  }
  if (!new RegExp(conf.indentationRules.increaseIndentPattern).test('flow f() -> T {')) return 'increaseIndentPattern';
  if (!new RegExp(conf.indentationRules.decreaseIndentPattern).test('  }')) return 'decreaseIndentPattern';
  return '';
});

const grammar = JSON.parse(fs.readFileSync(path.join(ext, gram.path), 'utf8'));
const scopes = new Set();

function walk(rule, where, visit) {
  if (!rule || typeof rule !== 'object') return;
  visit(rule, where);
  for (const key of ['patterns']) (rule[key] || []).forEach((r, i) => walk(r, `${where}.${key}[${i}]`, visit));
  for (const key of ['captures', 'beginCaptures', 'endCaptures']) {
    for (const [k, r] of Object.entries(rule[key] || {})) walk(r, `${where}.${key}.${k}`, visit);
  }
}
function allRules(visit) {
  (grammar.patterns || []).forEach((r, i) => walk(r, `patterns[${i}]`, visit));
  for (const [k, r] of Object.entries(grammar.repository || {})) walk(r, `repository.${k}`, visit);
}

async function onigCheck() {
  const onig = req('vscode-oniguruma');
  const wasmPath = path.join(path.dirname(require.resolve('vscode-oniguruma', { paths: [ext] })), 'onig.wasm');
  await onig.loadWASM(fs.readFileSync(wasmPath).buffer);
  const bad = [];
  let count = 0;
  allRules((rule, where) => {
    for (const key of ['match', 'begin', 'end', 'while']) {
      if (typeof rule[key] !== 'string') continue;
      count++;
      try {
        const s = new onig.OnigScanner([rule[key]]);
        s.dispose();
      } catch (e) {
        bad.push(`${where}.${key}: ${e.message}`);
      }
    }
  });
  return bad.length ? bad.join('; ') : count === 0 ? 'no regexes found' : '';
}

check('vscode: every #include names a repository rule', () => {
  const bad = [];
  allRules((rule, where) => {
    if (typeof rule.include === 'string' && rule.include.startsWith('#')) {
      if (!grammar.repository[rule.include.slice(1)]) bad.push(`${where}: ${rule.include}`);
    }
  });
  return bad.join('; ');
});

check('vscode: the fixtures exercise every scope of the grammar', () => {
  allRules((rule) => {
    for (const key of ['name', 'contentName']) {
      if (typeof rule[key] === 'string') rule[key].split(/\s+/).forEach((s) => s && scopes.add(s));
    }
  });
  const fixtures = path.join(ext, 'test', 'fixtures');
  const snaps = fs.readdirSync(fixtures).filter((f) => f.endsWith('.snap'));
  if (snaps.length === 0) return 'no snapshots';
  const seen = new Set();
  for (const f of snaps) {
    for (const line of fs.readFileSync(path.join(fixtures, f), 'utf8').split('\n')) {
      if (line.startsWith('#')) line.replace(/^#\s*\^+\s*/, '').split(/\s+/).forEach((s) => seen.add(s));
    }
  }
  const missing = [...scopes].filter((s) => !s.startsWith('invalid.') && !seen.has(s));
  return missing.length ? `never produced: ${missing.sort().join(', ')}` : '';
});

// Oniguruma loads asynchronously, so this check runs last.
(async () => {
  const why = await onigCheck().catch((e) => e.message);
  console.log(why ? `FAIL - vscode: grammar regexes compile with Oniguruma: ${why}` : 'ok - vscode: grammar regexes compile with Oniguruma');
  if (why) failed++;
  process.exit(failed ? 1 : 0);
})();
