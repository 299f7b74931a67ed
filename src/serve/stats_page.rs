//! `GET /stats`: the figures of `/metrics` for people, as inline SVG drawn
//! on the server (no script, nothing fetched): cost per run over time,
//! reliability per flow, tool success rates, and each flow's step-count
//! histogram, with a table of the per-flow numbers.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};

use super::api;
use super::metrics::{figures, Figures};
use super::page::{page, refused};
use super::render::escape;
use super::state::App;
use crate::exec::dollars;

const WIDTH: f64 = 640.0;
const BAR: f64 = 22.0;
const LABEL: f64 = 180.0;

pub(super) async fn stats(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let who = match api::who(&app, &headers) {
        Ok(w) => w,
        Err(e) => return refused(e),
    };
    let reviewer = who.clone();
    match app
        .blocking(move |_, store| figures(store, &reviewer))
        .await
    {
        Ok(f) => Html(page("Stats", Some(&who), None, &stats_html(&f))).into_response(),
        Err(e) => refused(e),
    }
}

fn stats_html(f: &Figures) -> String {
    let s = &f.stats;
    let mut out = String::from("<h1>Stats</h1>");
    if s.all.runs == 0 {
        out.push_str("<p class=\"none\">no runs</p>");
        return out;
    }
    out.push_str(&format!(
        "<p class=\"meta\">{} runs · the same figures as <code>flowc stats</code> and <code>/metrics</code></p>",
        s.all.runs
    ));
    out.push_str("<table><thead><tr><th>flow</th><th>runs</th><th>reliability</th><th>cost p50 / p95 / max</th><th>tokens p50 / p95 / max</th><th>retries</th><th>fallbacks</th><th>guardrail rejections</th><th>pending gates</th></tr></thead><tbody>");
    for (flow, x) in &s.flows {
        let pending: u64 = f
            .pending
            .iter()
            .filter(|((fl, _), _)| fl == flow)
            .map(|(_, n)| n)
            .sum();
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {} / {}</td><td class=\"num\">{} / {} / {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(flow),
            x.runs,
            match x.reliability.finished {
                0 => "–".to_string(),
                _ => format!("{:.2}", x.reliability.score),
            },
            dollars(x.cost.p50),
            dollars(x.cost.p95),
            dollars(x.cost.max),
            x.tokens.p50,
            x.tokens.p95,
            x.tokens.max,
            x.retries,
            x.fallbacks,
            x.guardrails.total,
            pending,
        ));
    }
    out.push_str("</tbody></table>");

    // Oldest first, left to right.
    let points: Vec<(f64, f64)> = f
        .runs
        .iter()
        .rev()
        .map(|r| (r.created_at, r.spend.cost))
        .collect();
    out.push_str("<h3>Cost per run over time</h3>");
    out.push_str(&scatter(&points));

    let reliability: Vec<(String, f64, String)> = s
        .flows
        .iter()
        .filter(|(_, x)| x.reliability.finished > 0)
        .map(|(flow, x)| {
            (
                flow.clone(),
                x.reliability.score,
                format!("{:.2}", x.reliability.score),
            )
        })
        .collect();
    out.push_str("<h3>Reliability per flow</h3>");
    out.push_str(&bars(&reliability, 1.0));

    let tools: Vec<(String, f64, String)> = s
        .all
        .tools
        .iter()
        .map(|(tool, t)| {
            (
                tool.clone(),
                t.success_rate,
                format!("{:.0}% of {}", t.success_rate * 100.0, t.calls),
            )
        })
        .collect();
    out.push_str("<h3>Tool call success rate</h3>");
    out.push_str(&bars(&tools, 1.0));

    for (flow, x) in &s.flows {
        let columns: Vec<(String, f64, String)> = x
            .step_histogram
            .iter()
            .map(|(steps, n)| (steps.to_string(), *n as f64, n.to_string()))
            .collect();
        out.push_str(&format!(
            "<h3>Steps per run: {}</h3>{}",
            escape(flow),
            bars(&columns, 0.0)
        ));
    }
    out
}

/// Horizontal bars: a label, a bar scaled to `max` (the largest value when
/// 0), and the value as text.
fn bars(items: &[(String, f64, String)], max: f64) -> String {
    if items.is_empty() {
        return "<p class=\"none\">none</p>".into();
    }
    let max = match max {
        m if m > 0.0 => m,
        _ => items.iter().map(|i| i.1).fold(0.0, f64::max).max(1.0),
    };
    let height = BAR * items.len() as f64 + 4.0;
    let room = WIDTH - LABEL - 90.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" font-size=\"12\" font-family=\"system-ui, sans-serif\">"
    );
    for (i, (label, v, text)) in items.iter().enumerate() {
        let y = 2.0 + BAR * i as f64;
        let w = (v / max).clamp(0.0, 1.0) * room;
        svg.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{room:.1}\" height=\"{:.1}\" fill=\"#eef1f6\"/>\
             <rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#2f5bd3\"><title>{}: {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LABEL - 6.0,
            y + 15.0,
            escape(label),
            y + 3.0,
            BAR - 6.0,
            y + 3.0,
            BAR - 6.0,
            escape(label),
            escape(text),
            LABEL + room + 6.0,
            y + 15.0,
            escape(text),
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Points (time, dollars) on a plot with the time axis spanning the runs
/// and the cost axis from 0 to the largest cost.
fn scatter(points: &[(f64, f64)]) -> String {
    if points.is_empty() {
        return "<p class=\"none\">none</p>".into();
    }
    let (height, left, bottom, top, right) = (220.0, 70.0, 30.0, 10.0, 20.0);
    let t0 = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let t1 = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let cmax = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let span = (t1 - t0).max(1.0);
    let cspan = if cmax > 0.0 { cmax } else { 1.0 };
    let (pw, ph) = (WIDTH - left - right, height - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" font-size=\"12\" font-family=\"system-ui, sans-serif\">\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#5d6677\"/>\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#5d6677\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">$0</text>\
         <text x=\"{left}\" y=\"{:.1}\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        top + ph,
        top + ph,
        left + pw,
        top + ph,
        left - 6.0,
        top + 10.0,
        escape(&dollars(cmax)),
        left - 6.0,
        top + ph,
        height - 8.0,
        escape(&minute(t0)),
        left + pw,
        height - 8.0,
        escape(&minute(t1)),
    );
    for (t, c) in points {
        let x = left + (t - t0) / span * pw;
        let y = top + ph - c / cspan * ph;
        svg.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"#2f5bd3\"><title>{} at {}</title></circle>",
            escape(&dollars(*c)),
            escape(&minute(*t))
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// `YYYY-MM-DD HH:MM` UTC.
fn minute(at: f64) -> String {
    let full = super::page::utc(at);
    full.get(..16).unwrap_or(&full).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_labels() {
        let svg = bars(
            &[
                ("<a>".into(), 2.0, "2".into()),
                ("b".into(), 4.0, "4".into()),
            ],
            0.0,
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
        let room = WIDTH - LABEL - 90.0;
        assert!(svg.contains(&format!("width=\"{:.1}\" height", room / 2.0)));
        assert!(svg.contains(&format!("width=\"{room:.1}\" height")));
    }

    #[test]
    fn a_scatter_spans_the_times_and_costs() {
        let svg = scatter(&[(1_700_000_000.0, 0.0), (1_700_000_600.0, 0.5)]);
        assert_eq!(svg.matches("<circle").count(), 2);
        // The first point on the time axis's left end at cost 0, the last on
        // the right end at the top.
        assert!(svg.contains("cx=\"70.0\" cy=\"190.0\""), "{svg}");
        assert!(svg.contains("cx=\"620.0\" cy=\"10.0\""), "{svg}");
    }
}
