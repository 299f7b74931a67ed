//! A JSON value for people, as HTML: a record is a table of its fields, a
//! list of records one table with a column per field, any list says how
//! many items it has, long text is folded, and what nests too deep is shown
//! as indented JSON.

use serde_json::Value;

/// Text longer than this is folded behind its first line.
const FOLD_CHARS: usize = 160;
/// Rows shown before "… and N more".
const MAX_ROWS: usize = 50;
/// Levels of tables before the rest is JSON.
const MAX_DEPTH: usize = 4;

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` as HTML for people.
pub(super) fn value(v: &Value) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

/// `value`, with a record's fields in `order` (its type's declaration
/// order) first: the store keeps a record's fields sorted by name.
pub(super) fn value_in_order(v: &Value, order: &[String]) -> String {
    let Value::Object(map) = v else {
        return value(v);
    };
    if map.is_empty() || order.is_empty() {
        return value(v);
    }
    let mut keys: Vec<&String> = order
        .iter()
        .filter(|k| map.contains_key(k.as_str()))
        .collect();
    keys.extend(map.keys().filter(|k| !order.contains(k)));
    let mut out = String::from("<table class=\"record\">");
    for k in keys {
        out.push_str("<tr><th>");
        out.push_str(&escape(k));
        out.push_str("</th><td>");
        write(&map[k.as_str()], 1, &mut out);
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
    out
}

fn write(v: &Value, depth: usize, out: &mut String) {
    match v {
        Value::Null => out.push_str("<span class=\"none\">none</span>"),
        Value::Bool(b) => out.push_str(if *b { "yes" } else { "no" }),
        Value::Number(n) => {
            out.push_str("<span class=\"num\">");
            out.push_str(&n.to_string());
            out.push_str("</span>");
        }
        Value::String(s) => text(s, out),
        _ if depth >= MAX_DEPTH => {
            out.push_str("<pre class=\"json\">");
            out.push_str(&escape(
                &serde_json::to_string_pretty(v).unwrap_or_default(),
            ));
            out.push_str("</pre>");
        }
        Value::Array(items) => list(items, depth, out),
        Value::Object(map) if map.is_empty() => {
            out.push_str("<span class=\"none\">empty record</span>")
        }
        Value::Object(map) => {
            out.push_str("<table class=\"record\">");
            for (k, v) in map {
                out.push_str("<tr><th>");
                out.push_str(&escape(k));
                out.push_str("</th><td>");
                write(v, depth + 1, out);
                out.push_str("</td></tr>");
            }
            out.push_str("</table>");
        }
    }
}

fn text(s: &str, out: &mut String) {
    let long = s.chars().count() > FOLD_CHARS || s.lines().count() > 3;
    if !long {
        out.push_str("<span class=\"text\">");
        out.push_str(&escape(s));
        out.push_str("</span>");
        return;
    }
    let head: String = s
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(FOLD_CHARS)
        .collect();
    out.push_str("<details class=\"long\"><summary>");
    out.push_str(&escape(&head));
    out.push_str(&format!(
        "… <span class=\"count\">({} characters)</span></summary><pre>",
        s.chars().count()
    ));
    out.push_str(&escape(s));
    out.push_str("</pre></details>");
}

fn count(n: usize) -> String {
    format!(
        "<div class=\"count\">{n} item{}</div>",
        if n == 1 { "" } else { "s" }
    )
}

fn list(items: &[Value], depth: usize, out: &mut String) {
    if items.is_empty() {
        out.push_str("<span class=\"none\">empty list</span>");
        return;
    }
    out.push_str(&count(items.len()));
    let shown = &items[..items.len().min(MAX_ROWS)];
    let records = shown
        .iter()
        .all(|v| matches!(v, Value::Object(m) if !m.is_empty()));
    if records {
        // One column per field any item has, in first-seen order.
        let mut columns: Vec<&String> = Vec::new();
        for item in shown {
            if let Value::Object(m) = item {
                for k in m.keys() {
                    if !columns.contains(&k) {
                        columns.push(k);
                    }
                }
            }
        }
        out.push_str("<table class=\"list\"><thead><tr><th>#</th>");
        for c in &columns {
            out.push_str(&format!("<th>{}</th>", escape(c)));
        }
        out.push_str("</tr></thead><tbody>");
        for (i, item) in shown.iter().enumerate() {
            out.push_str(&format!("<tr><td class=\"num\">{}</td>", i + 1));
            for c in &columns {
                out.push_str("<td>");
                match item.get(c.as_str()) {
                    Some(v) => write(v, depth + 1, out),
                    None => out.push_str("<span class=\"none\">—</span>"),
                }
                out.push_str("</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    } else {
        out.push_str("<ol class=\"list\">");
        for item in shown {
            out.push_str("<li>");
            write(item, depth + 1, out);
            out.push_str("</li>");
        }
        out.push_str("</ol>");
    }
    if items.len() > shown.len() {
        out.push_str(&format!(
            "<div class=\"count\">… and {} more</div>",
            items.len() - shown.len()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_are_tables_lists_count_and_long_text_folds() {
        let html = value(&json!({"order": "A-1", "amount": 42.5, "ok": true, "note": null}));
        assert!(html.starts_with("<table class=\"record\">"), "{html}");
        assert!(
            html.contains("<th>amount</th><td><span class=\"num\">42.5</span>"),
            "{html}"
        );
        assert!(
            html.contains("<th>note</th><td><span class=\"none\">none</span>"),
            "{html}"
        );

        let html = value(&json!([{"a": 1}, {"a": 2, "b": "x"}]));
        assert!(html.contains("2 items"), "{html}");
        assert!(html.contains("<th>a</th><th>b</th>"), "{html}");
        assert!(
            html.contains("<span class=\"none\">—</span>"),
            "a missing field: {html}"
        );

        let long = "word ".repeat(100);
        let html = value(&json!(long));
        assert!(
            html.contains("<details class=\"long\">") && html.contains("500 characters"),
            "{html}"
        );

        let many: Vec<u32> = (0..60).collect();
        let html = value(&json!(many));
        assert!(
            html.contains("60 items") && html.contains("… and 10 more"),
            "{html}"
        );
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            value(&json!("<script>\"x\" & 'y'</script>")),
            "<span class=\"text\">&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;</span>"
        );
        assert!(value(&json!({"<b>": 1})).contains("<th>&lt;b&gt;</th>"));
    }
}
