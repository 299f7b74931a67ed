//! Ports for servers the tests start as other processes (Prism, PostgreSQL).
//!
//! Such a server is told its port, so the port must be chosen before it
//! binds. A port from `bind(…:0)` comes from the kernel's ephemeral range,
//! which is also where every outgoing loopback connection of the other
//! tests takes its local port: between the probe and the server's own bind,
//! one of them can take it (CI failed so once, on Prism). A port below that
//! range is never handed out to a connection; another process on the
//! machine may still hold it, so callers retry with a new one when their
//! server reports the address in use.

use std::net::TcpListener;

/// How many ports a caller tries before it gives up.
pub const ATTEMPTS: usize = 8;

/// A port below the ephemeral range that nothing listens on right now.
pub fn unused() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_start / 2);
    for _ in 0..1_000 {
        let port = fastrand::u16(low..ephemeral_start);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_start} after 1,000 tries");
}

/// Whether a server's log says its address was taken.
pub fn was_taken(log: &str) -> bool {
    log.contains("EADDRINUSE") || log.contains("Address already in use")
}
