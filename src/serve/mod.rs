//! `flowc serve`: an HTTP service over a run store, for the people who
//! decide gates and the programs that start runs. It stores and decides;
//! it never drives a run (a `flowc worker` does), so it needs no provider
//! key and holds no secret a flow reads.
//!
//! - `api.rs`: the JSON API (runs, steps, trace, spend, inbox, decisions);
//! - `page.rs`: the HTML pages (login, inbox, runs, a run), built on
//!   `view.rs` (what a gate card and a run page show, shared with the API),
//!   `render.rs` (a JSON value for people) and `form.rs` (the edit form a
//!   gate's type makes);
//! - `metrics.rs`: `GET /metrics`, the `flowc stats` figures in the
//!   Prometheus text format; `stats_page.rs`: the same as a page of SVG charts;
//! - `auth.rs`: bearer tokens and reviewers; `state.rs`: what every request
//!   shares (store connections, each run's compiled program, secrets to
//!   scrub); `program.rs`: what serve reads from a run's program.
//!
//! Store calls block: every one runs on tokio's blocking pool
//! (`App::blocking`), never on the async workers.

mod api;
mod auth;
mod form;
mod metrics;
mod page;
mod program;
mod render;
mod state;
mod stats_page;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{Durability, Store};

/// `flowc serve`'s options.
pub struct Options {
    pub store: PathBuf,
    /// `IP:PORT`; port 0 picks a free one (the line on stderr names it).
    pub listen: String,
    /// `--tokens FILE`: the reviewers' tokens (JSON, see auth.rs).
    pub tokens: Option<PathBuf>,
    pub durability: Durability,
}

/// Runs the service until SIGINT or SIGTERM. Exit status: 0 stopped by a
/// signal, 2 refused to start (a bad option or token file, a non-loopback
/// address without tokens, an address that cannot be bound), 6 the store
/// cannot be opened.
pub fn run(options: Options) -> Result<i32, String> {
    let addr: SocketAddr = options.listen.parse().map_err(|_| {
        format!(
            "--listen `{}` is not an address and port such as 127.0.0.1:8080",
            options.listen
        )
    })?;
    let tokens = auth::Tokens::load(options.tokens.as_deref())?;
    if tokens.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {addr} without tokens: anyone who can reach it could decide gates; \
             give reviewers' tokens with --tokens FILE (or FLOWC_SERVE_TOKENS), or listen on 127.0.0.1"
        ));
    }
    let store = match Store::open(&options.store, options.durability) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(crate::run::EXIT_STORE);
        }
    };
    let app = Arc::new(state::App::new(
        options.store.clone(),
        options.durability,
        store,
        tokens,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        // Before the line that says serve is ready.
        let stop = crate::run::stop_signals().map_err(|e| format!("cannot handle signals: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        eprintln!(
            "flowc serve: listening on http://{bound}/ (store {}, {})",
            shown_store(&options.store),
            app.auth.describe()
        );
        let router = api::routes()
            .merge(page::routes())
            .layer(axum::middleware::from_fn_with_state(
                app.clone(),
                state::scrub_secrets,
            ))
            .with_state(app);
        axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| format!("the server failed: {e}"))?;
        eprintln!("flowc serve: stopped");
        Ok(0)
    })
}

/// The store as the start-up line names it: a PostgreSQL URL without its
/// user and password.
fn shown_store(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    match text.split_once("://") {
        Some((scheme, rest)) if crate::store::is_postgres(&text) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => text,
        },
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_start_up_line_names_a_postgres_store_without_its_password() {
        let shown = |s: &str| super::shown_store(std::path::Path::new(s));
        assert_eq!(
            shown("postgres://flowc:SECRET@db:5432/flowc"),
            "postgres://…@db:5432/flowc"
        );
        assert_eq!(shown("postgresql://db/flowc"), "postgresql://db/flowc");
        assert_eq!(shown(".flowc/runs.db"), ".flowc/runs.db");
    }
}
