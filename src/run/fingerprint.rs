//! What a run records of its program, so a resume under a changed program is
//! refused with a message that names what changed: one hash per top-level
//! declaration (`flow reconcile` in `examples/x.flow`), and one per standard
//! library module.
//!
//! What is hashed is each declaration's canonical form
//! ([`crate::canonical`]), not its text: comments, blank lines, layout and
//! literal spellings (`100k` for `100000`) do not change a fingerprint, so a
//! reformat never blocks `flowc resume`; a change in meaning does.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ast::Item;
use crate::canonical;
use crate::loader::LoadedModule;
use crate::source::Sources;

/// FNV-1a, 64 bits: stable across builds and platforms (the standard
/// library's hasher promises neither).
fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `"examples/x.flow: flow reconcile" → hash` for every declaration read,
/// from the modules the compilation already parsed (`Compilation::modules`).
pub fn fingerprint(sources: &Sources, modules: &[LoadedModule]) -> Value {
    let mut map = BTreeMap::new();
    for loaded in modules {
        let (file, module) = (sources.get(loaded.file), &loaded.ast);
        if file.is_std() {
            map.insert(
                format!("{}: module", file.name),
                Value::String(hash(&canonical::module(module))),
            );
            continue;
        }
        for item in &module.items {
            let (kind, name) = match item {
                Item::Use(_) => ("use", String::new()),
                Item::Type(t) => ("type", t.name.name.clone()),
                Item::Model(m) => ("model", m.name.name.clone()),
                Item::Resource(r) => ("resource", r.name.clone()),
                Item::Provider(p) => ("provider", p.name.name.clone()),
                Item::Server(d) => ("server", d.name.name.clone()),
                Item::Tool(t) => ("tool", t.name.name.clone()),
                Item::Agent(a) => ("agent", a.name.name.clone()),
                Item::Flow(f) => ("flow", f.name.name.clone()),
                // Tests do not change what a run does.
                Item::Test(_) | Item::Eval(_) => continue,
            };
            let text = canonical::item(item);
            let text = text.as_str();
            let key = if name.is_empty() {
                format!("{}: {kind} {}", file.name, hash(text))
            } else {
                format!("{}: {kind} {name}", file.name)
            };
            map.insert(key, Value::String(hash(text)));
        }
    }
    Value::Object(map.into_iter().collect())
}

/// What changed between two fingerprints, one sentence per declaration.
pub fn changes(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("{k} was removed")),
            Some(w) if w != v => out.push(format!("{k} changed")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("{k} was added"));
        }
    }
    out
}
