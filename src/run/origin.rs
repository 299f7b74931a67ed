//! An HTTP origin: scheme, host and port, the unit connections are kept
//! for and `FLOWC_H2C` lists.

/// An origin as URLs normalise it (lower-case host names, IPv6 literals in
/// brackets, the scheme's port when none is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `https`: connections are TLS, and ALPN picks the HTTP version.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an `http` or `https` URL with a host; `None` for
    /// anything else (the request then fails as one that cannot be built).
    pub fn of(url: &reqwest::Url) -> Option<Origin> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        Some(Origin {
            tls,
            host: url.host_str()?.to_string(),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `url` is of this origin, without building one for it (a
    /// lookup per call should not allocate).
    pub fn holds(&self, url: &reqwest::Url) -> bool {
        url.scheme() == if self.tls { "https" } else { "http" }
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
    }

    /// The host as sockets and TLS name it: IPv6 literals without brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// The `Host` header HTTP/1.1 sends: the port only when not the
    /// scheme's own.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}
