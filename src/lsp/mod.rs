//! `flowc lsp`: a language server over standard input and output, on the
//! crates rust-analyzer uses (`lsp-server`, `lsp-types`).
//!
//! Every answer comes from an [`Analysis`] of the document with the files it
//! `use`s, built by the same loader, lowering and checks as `flowc check`
//! (unsaved editor buffers stand in for their files). Diagnostics are
//! published on open at once and on change after a short quiet period
//! (debounced), for the document and every `use`d file.

// `lsp_types::Uri` caches its parsed parts in cells, which clippy reads as a
// mutable hash key; its hash and equality are of the text alone, which never
// changes (rust-analyzer allows the lint for the same reason).
#![allow(clippy::mutable_key_type)]

mod analysis;
mod features;
mod position;
mod uri;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lsp_server::{Connection, Message, Notification, Request, Response};
use lsp_types::Uri;
use serde_json::Value;

pub use analysis::Analysis;

/// How long the document must stay unchanged before diagnostics are
/// recomputed: typing does not compile on every keystroke.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Runs the server until the client asks it to exit. Exit status 0 after a
/// clean `shutdown`/`exit`, 1 when the client closed the connection without
/// one.
pub fn serve_stdio() -> Result<i32, String> {
    let (connection, io) = Connection::stdio();
    let status = serve(&connection)?;
    drop(connection);
    io.join().map_err(|e| format!("language server I/O: {e}"))?;
    Ok(status)
}

fn serve(connection: &Connection) -> Result<i32, String> {
    let capabilities = serde_json::to_value(features::capabilities())
        .map_err(|e| format!("language server capabilities: {e}"))?;
    connection
        .initialize(capabilities)
        .map_err(|e| format!("language server initialisation: {e}"))?;
    let mut server = Server::default();
    loop {
        let message = match server.deadline() {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                match connection.receiver.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(1),
                }
            }
            None => match connection.receiver.recv() {
                Ok(m) => Some(m),
                Err(_) => return Ok(1),
            },
        };
        let Some(message) = message else {
            server.publish_due(connection, false);
            continue;
        };
        match message {
            Message::Request(request) => {
                if connection
                    .handle_shutdown(&request)
                    .map_err(|e| format!("language server: {e}"))?
                {
                    return Ok(0);
                }
                // Answers see every change made so far.
                server.publish_due(connection, true);
                let response = server.answer(request);
                send(connection, Message::Response(response));
            }
            Message::Notification(n) => server.notify(connection, n),
            Message::Response(_) => {}
        }
    }
}

fn send(connection: &Connection, message: Message) {
    // A closed connection ends the loop on the next receive.
    let _ = connection.sender.send(message);
}

/// An open document.
struct Document {
    path: PathBuf,
    text: String,
    version: i32,
}

#[derive(Default)]
struct Server {
    documents: HashMap<Uri, Document>,
    /// Documents changed since their diagnostics were published, and when
    /// they were last changed.
    dirty: HashMap<Uri, Instant>,
    /// Files with diagnostics published, per open document that caused them.
    published: HashMap<Uri, HashSet<Uri>>,
}

impl Server {
    fn deadline(&self) -> Option<Instant> {
        self.dirty.values().min().map(|&t| t + DEBOUNCE)
    }

    fn notify(&mut self, connection: &Connection, n: Notification) {
        match n.method.as_str() {
            "textDocument/didOpen" => {
                let Ok(p) =
                    serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params)
                else {
                    return;
                };
                let Some(path) = uri::to_path(&p.text_document.uri) else {
                    return;
                };
                let uri = p.text_document.uri.clone();
                self.documents.insert(
                    uri.clone(),
                    Document {
                        path,
                        text: p.text_document.text,
                        version: p.text_document.version,
                    },
                );
                self.dirty.insert(uri, Instant::now() - DEBOUNCE);
                self.publish_due(connection, true);
            }
            "textDocument/didChange" => {
                let Ok(p) =
                    serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params)
                else {
                    return;
                };
                let uri = p.text_document.uri;
                let Some(doc) = self.documents.get_mut(&uri) else {
                    return;
                };
                for change in p.content_changes {
                    match change.range {
                        None => doc.text = change.text,
                        Some(range) => {
                            let index = position::LineIndex::new(&doc.text);
                            let start = index.offset(&doc.text, range.start);
                            let end = index.offset(&doc.text, range.end).max(start);
                            doc.text.replace_range(start..end, &change.text);
                        }
                    }
                }
                doc.version = p.text_document.version;
                self.dirty.insert(uri, Instant::now());
            }
            "textDocument/didSave" => {
                // Other open documents may `use` the saved file.
                let now = Instant::now();
                for uri in self.documents.keys() {
                    self.dirty.entry(uri.clone()).or_insert(now);
                }
            }
            "textDocument/didClose" => {
                let Ok(p) =
                    serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params)
                else {
                    return;
                };
                let uri = p.text_document.uri;
                self.documents.remove(&uri);
                self.dirty.remove(&uri);
                for file in self.published.remove(&uri).unwrap_or_default() {
                    publish(connection, file, Vec::new(), None);
                }
            }
            _ => {}
        }
    }

    /// Publishes the diagnostics of dirty documents whose quiet period is
    /// over (all of them with `now`).
    fn publish_due(&mut self, connection: &Connection, now: bool) {
        let due: Vec<Uri> = self
            .dirty
            .iter()
            .filter(|(_, &t)| now || t + DEBOUNCE <= Instant::now())
            .map(|(u, _)| u.clone())
            .collect();
        for uri in due {
            self.dirty.remove(&uri);
            let Some(analysis) = self.analyse(&uri) else {
                continue;
            };
            let version = self.documents.get(&uri).map(|d| d.version);
            let mut by_file: HashMap<Uri, Vec<lsp_types::Diagnostic>> = HashMap::new();
            let files = analysis.disk_files();
            for (file, path) in &files {
                if let Some(u) = uri::from_path(path) {
                    let list = by_file.entry(u).or_default();
                    list.extend(
                        analysis
                            .diagnostics
                            .iter()
                            .filter(|d| d.span.file == *file)
                            .map(|d| features::diagnostic(&analysis, d)),
                    );
                }
            }
            // The document itself always gets a list, even an empty one,
            // and under the URI the client knows it by.
            let own = files
                .iter()
                .find(|(f, _)| *f == analysis.file)
                .and_then(|(_, p)| uri::from_path(p));
            if let Some(own) = own {
                if own != uri {
                    let list = by_file.remove(&own).unwrap_or_default();
                    by_file.insert(uri.clone(), list);
                }
            }
            by_file.entry(uri.clone()).or_default();
            let before = self.published.remove(&uri).unwrap_or_default();
            let mut now_published = HashSet::new();
            for (file, list) in by_file {
                if list.is_empty() && file != uri && !before.contains(&file) {
                    continue;
                }
                let v = if file == uri { version } else { None };
                if !list.is_empty() {
                    now_published.insert(file.clone());
                }
                publish(connection, file, list, v);
            }
            for stale in before.difference(&now_published) {
                if *stale != uri {
                    publish(connection, stale.clone(), Vec::new(), None);
                }
            }
            self.published.insert(uri, now_published);
        }
    }

    fn analyse(&self, uri: &Uri) -> Option<Analysis> {
        let doc = self.documents.get(uri)?;
        let overlays: Vec<(PathBuf, String)> = self
            .documents
            .values()
            .map(|d| (d.path.clone(), d.text.clone()))
            .collect();
        Analysis::new(&doc.path, &overlays)
    }

    /// Completing after `.` happens in text that does not parse (`a.` has
    /// no field yet): the analysis reads a placeholder field there, so the
    /// declaration around it parses and its bindings keep their types.
    fn analyse_for_completion(&self, uri: &Uri, params: &Value) -> Option<Analysis> {
        let doc = self.documents.get(uri)?;
        let position: lsp_types::Position =
            serde_json::from_value(params.get("position")?.clone()).ok()?;
        let index = position::LineIndex::new(&doc.text);
        let offset = index.offset(&doc.text, position);
        if !doc.text.get(..offset).is_some_and(|t| t.ends_with('.')) {
            return self.analyse(uri);
        }
        let mut text = doc.text.clone();
        text.insert_str(offset, "flowc_completion_placeholder");
        let overlays: Vec<(PathBuf, String)> = self
            .documents
            .iter()
            .map(|(u, d)| {
                let t = if u == uri {
                    text.clone()
                } else {
                    d.text.clone()
                };
                (d.path.clone(), t)
            })
            .collect();
        Analysis::new(&doc.path, &overlays)
    }

    fn answer(&mut self, request: Request) -> Response {
        let id = request.id.clone();
        let uri = request
            .params
            .pointer("/textDocument/uri")
            .and_then(|u| serde_json::from_value::<Uri>(u.clone()).ok());
        let Some(uri) = uri else {
            return Response::new_err(
                id,
                lsp_server::ErrorCode::MethodNotFound as i32,
                format!("unsupported request {}", request.method),
            );
        };
        let analysis = if request.method == "textDocument/completion" {
            self.analyse_for_completion(&uri, &request.params)
        } else {
            self.analyse(&uri)
        };
        let result: Value = match analysis {
            None => Value::Null,
            Some(a) => features::handle(&a, &uri, &request.method, request.params.clone())
                .unwrap_or(Value::Null),
        };
        Response::new_ok(id, result)
    }
}

fn publish(
    connection: &Connection,
    uri: Uri,
    diagnostics: Vec<lsp_types::Diagnostic>,
    version: Option<i32>,
) {
    let params = lsp_types::PublishDiagnosticsParams {
        uri,
        diagnostics,
        version,
    };
    if let Ok(params) = serde_json::to_value(params) {
        send(
            connection,
            Message::Notification(Notification::new(
                "textDocument/publishDiagnostics".into(),
                params,
            )),
        );
    }
}
