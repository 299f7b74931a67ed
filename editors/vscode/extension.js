// The Flow extension: starts `flowc lsp` (the binary from the `flowc.path`
// setting) for .flow files through vscode-languageclient.
'use strict';

const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');

let client;

function start() {
  const command = vscode.workspace.getConfiguration('flowc').get('path') || 'flowc';
  const server = { command, args: ['lsp'], transport: TransportKind.stdio };
  client = new LanguageClient(
    'flowc',
    'flowc language server',
    { run: server, debug: server },
    { documentSelector: [{ scheme: 'file', language: 'flow' }] },
  );
  return client.start().catch((err) => {
    vscode.window.showErrorMessage(
      `Could not start \`${command} lsp\`: ${err.message}. Install flowc (cargo install --path .) or set "flowc.path".`,
    );
  });
}

function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration('flowc.path')) {
        if (client) await client.stop();
        await start();
      }
    }),
  );
  return start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
