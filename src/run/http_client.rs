//! The run's HTTP clients: one connection pool per origin, shared by every
//! `http` tool, model provider and gate notification of the run, so calls
//! to one host reuse its connections, and over HTTP/2 all share one.
//!
//! Which HTTP version a request speaks is decided here, never guessed:
//! - `https://`: what TLS's ALPN agrees with the server: HTTP/2 when it
//!   offers it, else HTTP/1.1.
//! - `http://`: HTTP/1.1, unless its origin is listed in `FLOWC_H2C`
//!   (`HOST[:PORT]`, comma-separated): HTTP/2 with prior knowledge (h2c),
//!   one connection carrying every call in flight to it. A listed server
//!   that does not speak h2c fails those calls as connection errors, so a
//!   wrong entry shows at the first call, not as a silent fallback.
//!
//! A malformed `FLOWC_H2C` stops the run before the first call.

use std::sync::Arc;

use super::connections::Connections;
use super::origin::Origin;

/// The variable that lists the plain-HTTP origins spoken to over HTTP/2.
pub const H2C_ENV: &str = "FLOWC_H2C";

/// Why a run's HTTP clients could not be made.
#[derive(Debug)]
pub enum ClientError {
    /// An entry of `FLOWC_H2C` that is not a plain-HTTP `HOST[:PORT]`.
    H2cEntry { entry: String, why: String },
    /// The TLS or HTTP stack did not start.
    Start(reqwest::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::H2cEntry { entry, why } => write!(f, "{H2C_ENV}: `{entry}` {why}"),
            ClientError::Start(e) => write!(f, "cannot start the HTTP client: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The clients of one run (cheap to clone: the pools are shared).
#[derive(Clone)]
pub struct HttpClients {
    /// HTTP/1.1 over TCP; over TLS, the version ALPN agrees.
    negotiated: reqwest::Client,
    /// HTTP/2 with prior knowledge, for the origins `FLOWC_H2C` lists.
    h2c: Option<H2c>,
    /// `http` tools' own connections (`connections.rs`), lighter per call
    /// than reqwest's pool; `None` where a proxy is configured, which only
    /// reqwest honours, and where a caller hands in its own client.
    connections: Option<Arc<Connections>>,
}

#[derive(Clone)]
struct H2c {
    client: reqwest::Client,
    origins: Arc<[Origin]>,
}

impl HttpClients {
    /// The clients for a run; `h2c` is the value of `FLOWC_H2C`, if set.
    /// `Err` says what is wrong with it, or why a client did not start.
    pub fn new(h2c: Option<&str>) -> Result<HttpClients, ClientError> {
        let origins = match h2c {
            Some(text) => parse_origins(text)?,
            None => Vec::new(),
        };
        let negotiated = builder().build().map_err(ClientError::Start)?;
        let origins: Arc<[Origin]> = origins.into();
        let connections =
            (!proxy_configured()).then(|| Arc::new(Connections::new(origins.clone())));
        let h2c = if origins.is_empty() {
            None
        } else {
            Some(H2c {
                client: builder()
                    .http2_prior_knowledge()
                    .build()
                    .map_err(ClientError::Start)?,
                origins,
            })
        };
        Ok(HttpClients {
            negotiated,
            h2c,
            connections,
        })
    }

    /// The connections `http` tools use; `None`: send with [`Self::for_url`].
    pub(crate) fn connections(&self) -> Option<&Connections> {
        self.connections.as_deref()
    }

    /// The client for a request to `url`.
    pub fn for_url(&self, url: &reqwest::Url) -> &reqwest::Client {
        match &self.h2c {
            Some(h2c) if url.scheme() == "http" && h2c.origins.iter().any(|o| o.holds(url)) => {
                &h2c.client
            }
            _ => &self.negotiated,
        }
    }

    /// The client for a request to `url` given as text (an unparsable URL
    /// gets the default client, whose request then fails as a bad URL).
    pub fn for_text(&self, url: &str) -> &reqwest::Client {
        match reqwest::Url::parse(url) {
            Ok(url) => self.for_url(&url),
            Err(_) => &self.negotiated,
        }
    }
}

impl From<reqwest::Client> for HttpClients {
    /// One client for every request (tests that call tools directly).
    fn from(client: reqwest::Client) -> HttpClients {
        HttpClients {
            negotiated: client,
            h2c: None,
            connections: None,
        }
    }
}

/// Whether reqwest would send through a proxy: it reads these variables
/// from the process's environment, and our own connections do not speak to
/// proxies, so `http` tools then stay on reqwest.
fn proxy_configured() -> bool {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(super::http::USER_AGENT)
}

/// `FLOWC_H2C`: `HOST[:PORT]` entries separated by commas (blank ones
/// ignored); `http://` in front is allowed, a path or `https://` is not.
fn parse_origins(text: &str) -> Result<Vec<Origin>, ClientError> {
    let mut origins = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| ClientError::H2cEntry {
            entry: entry.to_string(),
            why: why.to_string(),
        };
        if entry.starts_with("https://") {
            return Err(bad(
                "is an https origin; over TLS, HTTP/2 is agreed with the server by itself (ALPN), list only plain-HTTP origins here",
            ));
        }
        let bare = entry.strip_prefix("http://").unwrap_or(entry);
        let bare = bare.strip_suffix('/').unwrap_or(bare);
        if bare.is_empty() || bare.contains(['/', '?', '#', '@']) || bare.contains("://") {
            return Err(bad("is not HOST or HOST:PORT"));
        }
        let url = reqwest::Url::parse(&format!("http://{bare}/"))
            .map_err(|e| bad(&format!("is not HOST or HOST:PORT ({e})")))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(bad("is not HOST or HOST:PORT"));
        };
        origins.push(Origin {
            tls: false,
            host: host.to_string(),
            port,
        });
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(host: &str, port: u16) -> Origin {
        Origin {
            tls: false,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn origins_are_host_and_port() {
        assert_eq!(
            parse_origins(" 127.0.0.1:8080, http://Localhost/ ,,[::1]:9000").unwrap(),
            [
                origin("127.0.0.1", 8080),
                origin("localhost", 80),
                origin("[::1]", 9000)
            ]
        );
        assert_eq!(parse_origins("").unwrap(), []);
        for bad in [
            "https://api.example.com",
            "127.0.0.1:8080/v1",
            "127.0.0.1:http",
            "user@host:1",
            "ftp://host:1",
            "127.0.0.1:99999",
        ] {
            let e = parse_origins(bad).unwrap_err().to_string();
            assert!(e.starts_with("FLOWC_H2C: `"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_listed_plain_origins_get_prior_knowledge() {
        let clients = HttpClients::new(Some("127.0.0.1:8080")).unwrap();
        let h2c = &clients.h2c.as_ref().unwrap().client;
        let pick = |u: &str| clients.for_text(u) as *const reqwest::Client;
        assert_eq!(pick("http://127.0.0.1:8080/x?y=1"), h2c as *const _);
        for other in [
            "http://127.0.0.1:8081/x",
            "https://127.0.0.1:8080/x",
            "http://localhost:8080/x",
            "not a url",
        ] {
            assert_eq!(pick(other), &clients.negotiated as *const _, "{other}");
        }
        assert!(HttpClients::new(None).unwrap().h2c.is_none());
    }
}
