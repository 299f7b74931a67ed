//! The integration tests: one binary, one module per area. Shared servers
//! and runners live in `support`.

mod support;

#[path = "../benches/generated.rs"]
mod generated;

mod approvals;
mod authoring;
mod cli;
mod durable;
mod evals;
mod example_live;
mod explain;
mod fault_matrix;
mod format;
mod generated_flows;
mod github_review;
mod golden;
mod graph;
mod guarantees;
mod http1_exchange;
mod http2;
mod http_requests;
mod lsp;
mod mcp;
mod open_records;
mod otel;
mod providers;
mod robustness;
mod run_faults;
mod runtime;
mod sealed;
mod serve;
mod stats;
mod store;
mod tidy;
mod tools;
mod validate;
mod worker;
