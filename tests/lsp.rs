//! `flowc lsp` in a real conversation over stdio, as an editor has it:
//! initialize, open, change, hover, definition, references, completion,
//! symbols, formatting, code actions, shutdown and exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SHARED: &str = r#"type Account { id: string, seats: number, plan: "team" | "business" }

tool get_account(id: string) -> Account {
  http GET "https://crm.example/accounts/{id}"
  effect read
  timeout 5s
  retry 2 on rate_limit backoff 1s
}
"#;

/// Line 7 (0-based 6) has `t.titel`, a T002 with `did you mean `title`?`.
const BROKEN: &str = r#"use std.models.{openai}
use "./shared.flow".{Account, get_account}

type Ticket { id: string, title: string }

flow seats(id: string, t: Ticket) -> { seats: number, label: string, note: string } {
  let label = t.titel
  budget { tokens 10k, cost $0.10, steps 10, wall 1m }
  let account = get_account(id: id)
  let note = llm writer -> string { prompt "Seats: {account.seats}" }
  return { seats: account.seats, label: label, note: note }
}

model writer = openai("gpt-4o-mini") { max_tokens: 200 }
"#;

struct Client {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
    next_id: i64,
    /// Notifications seen while waiting for responses.
    diagnostics: Vec<Value>,
}

impl Client {
    fn start(dir: &Path) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
            .arg("lsp")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flowc lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse::<usize>().ok();
                    }
                }
                let Some(n) = length else { return };
                let mut body = vec![0; n];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Client {
            child,
            stdin,
            messages: rx,
            next_id: 0,
            diagnostics: Vec::new(),
        }
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self
                .messages
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
            if m["method"] == "textDocument/publishDiagnostics" {
                self.diagnostics.push(m["params"].clone());
            }
        }
    }

    /// The next diagnostics published for `uri` (seen already or arriving).
    fn diagnostics_for(&mut self, uri: &str) -> Vec<Value> {
        if let Some(i) = self.diagnostics.iter().position(|p| p["uri"] == uri) {
            let p = self.diagnostics.remove(i);
            return p["diagnostics"].as_array().cloned().unwrap_or_default();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self
                .messages
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no diagnostics for {uri}"));
            if m["method"] == "textDocument/publishDiagnostics" {
                if m["params"]["uri"] == uri {
                    return m["params"]["diagnostics"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                }
                self.diagnostics.push(m["params"].clone());
            }
        }
    }
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn at(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
}

fn temp_project() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("shared.flow"), SHARED).expect("write");
    std::fs::write(dir.join("main.flow"), BROKEN).expect("write");
    std::fs::canonicalize(&dir).expect("canonical")
}

fn labels(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("completion items")
        .iter()
        .map(|i| i["label"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_conversation_over_stdio() {
    let dir = temp_project();
    let main = uri(&dir.join("main.flow"));
    let shared = uri(&dir.join("shared.flow"));
    let mut c = Client::start(&dir);

    let init = c.request(
        "initialize",
        json!({"processId": null, "rootUri": uri(&dir), "capabilities": {}}),
    );
    let caps = &init["capabilities"];
    for cap in [
        "hoverProvider",
        "definitionProvider",
        "referencesProvider",
        "completionProvider",
        "documentSymbolProvider",
        "documentFormattingProvider",
        "codeActionProvider",
    ] {
        assert!(caps.get(cap).is_some(), "no {cap}: {caps}");
    }
    c.notify("initialized", json!({}));

    // Open: the misspelt field is reported at once, where it is.
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": main, "languageId": "flow", "version": 1, "text": BROKEN}}),
    );
    let diags = c.diagnostics_for(&main);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0]["code"], "T002");
    assert_eq!(diags[0]["source"], "flowc");
    assert_eq!(
        diags[0]["range"]["start"],
        json!({"line": 6, "character": 16})
    );
    assert!(diags[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("did you mean `title`"));

    // Hover on a diagnostic explains its code; a quick fix applies the help.
    let hover = c.request("textDocument/hover", at(&main, 6, 18));
    let text = hover["contents"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("T002") && text.contains("flowc explain"),
        "{text}"
    );
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": main},
               "range": {"start": {"line": 6, "character": 16}, "end": {"line": 6, "character": 21}},
               "context": {"diagnostics": []}}),
    );
    let fix = &actions[0];
    assert_eq!(fix["title"], "Replace with `title`", "{actions}");
    assert_eq!(fix["edit"]["changes"][&main][0]["newText"], "title");

    // Change (incrementally): fixing it clears the list, after the debounce.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": main, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 6, "character": 16},
                                              "end": {"line": 6, "character": 21}},
                                   "text": "title"}]}),
    );
    let diags = c.diagnostics_for(&main);
    assert!(diags.is_empty(), "{diags:?}");

    // Hover: a binding's type, a tool's effect/timeout/retry, an llm step's
    // worst case.
    let hover = c.request("textDocument/hover", at(&main, 8, 7));
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(text.contains("account: Account"), "{text}");
    let hover = c.request("textDocument/hover", at(&main, 8, 20));
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(
        text.contains("tool get_account(id: string) -> Account")
            && text.contains("effect: **read**")
            && text.contains("timeout 5s")
            && text.contains("retry 2 on rate_limit"),
        "{text}"
    );
    let hover = c.request("textDocument/hover", at(&main, 9, 7));
    let text = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(
        text.contains("note: string")
            && text.contains("worst case: 2 attempts × 200 output tokens"),
        "{text}"
    );

    // Definition: into the `use`d file; and of a binding.
    let def = c.request("textDocument/definition", at(&main, 8, 20));
    assert_eq!(def["uri"], shared, "{def}");
    assert_eq!(def["range"]["start"], json!({"line": 2, "character": 5}));
    let def = c.request("textDocument/definition", at(&main, 10, 19));
    assert_eq!(def["uri"], main);
    assert_eq!(def["range"]["start"], json!({"line": 8, "character": 6}));

    // Definition of a `use`d file's path: the file.
    let def = c.request("textDocument/definition", at(&main, 1, 8));
    assert_eq!(def["uri"], shared, "{def}");

    // References: the binding's declaration and its three uses.
    let refs = c.request(
        "textDocument/references",
        json!({"textDocument": {"uri": main}, "position": {"line": 8, "character": 7},
               "context": {"includeDeclaration": true}}),
    );
    let lines: Vec<u64> = refs
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| l["range"]["start"]["line"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(lines, [8, 9, 10], "{refs}");
    let tool_refs = c.request(
        "textDocument/references",
        json!({"textDocument": {"uri": main}, "position": {"line": 8, "character": 20},
               "context": {"includeDeclaration": true}}),
    );
    let files: Vec<&str> = tool_refs
        .as_array()
        .expect("locations")
        .iter()
        .map(|l| l["uri"].as_str().unwrap_or_default())
        .collect();
    assert!(
        files.contains(&shared.as_str()) && files.contains(&main.as_str()),
        "{tool_refs}"
    );

    // Completion: names and keywords in a flow; fields after `.`, while
    // the text does not parse.
    let items = c.request("textDocument/completion", at(&main, 10, 2));
    let got = labels(&items);
    for name in ["let", "return", "llm", "account", "get_account", "Ticket"] {
        assert!(got.contains(&name.to_string()), "{name} not in {got:?}");
    }
    let with_dot = BROKEN
        .replace("t.titel", "t.title")
        .replace("account.seats, label", "account., label");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": main, "version": 3},
               "contentChanges": [{"text": with_dot}]}),
    );
    let items = c.request("textDocument/completion", at(&main, 10, 26));
    let got = labels(&items);
    for field in ["id", "seats", "plan"] {
        assert!(got.contains(&field.to_string()), "{got:?}");
    }

    // Symbols: the file's declarations, the flow's bindings under it.
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": main, "version": 4},
               "contentChanges": [{"text": BROKEN.replace("t.titel", "t.title")}]}),
    );
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": main}}),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .expect("symbols")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["Ticket", "seats", "writer"], "{symbols}");
    let flow = &symbols[1];
    assert!(
        flow["children"].to_string().contains("\"account\""),
        "{flow}"
    );

    // Formatting: the formatter's layout as one edit.
    let messy = "flow   f(q: string) -> string {\n  budget { tokens 1k, cost $0.01, steps 5, wall 1m }\n  return q }\n";
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": main, "version": 5}, "contentChanges": [{"text": messy}]}),
    );
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": main}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    let formatted = flowc::format::format_source(messy).expect("formats");
    assert_eq!(edits[0]["newText"], formatted, "{edits}");

    // Shutdown, then exit: a clean end with status 0.
    let result = c.request("shutdown", Value::Null);
    assert!(result.is_null());
    c.notify("exit", Value::Null);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = c.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "flowc lsp did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
