//! The `http` tool's connections: hyper's connection API with a small pool
//! of our own, instead of reqwest's pooled client.
//!
//! Why not reqwest: in a 1,000-wide fan-out every call in flight held, on
//! top of its connection, reqwest's and hyper-util's per-request machinery
//! (a pooled request channel, a boxed connection future, the client's call
//! future: ~21 KiB a call, issue 16). Here a call in flight holds its
//! request, one connection's buffers (HTTP/1.1) or one stream of a shared
//! connection (HTTP/2), and nothing else.
//!
//! - HTTP/1.1: one connection per call in flight; after a reply is read to
//!   its end the connection waits, idle, for the origin's next call (at
//!   most [`IDLE_FOR`], as reqwest's pool keeps them).
//! - HTTP/2: one connection per origin, each call a stream of it. The first
//!   call connects while the others wait for it, so a fan-out opens one.
//! - Which one, as `http_client.rs` says: ALPN over TLS, prior knowledge
//!   for the plain origins `FLOWC_H2C` lists, HTTP/1.1 otherwise.
//! - Redirects are followed as reqwest's default policy does: up to ten,
//!   never back to a URL already visited; 301, 302 and 303 turn a request
//!   other than GET or HEAD into a GET without body; credentials are
//!   dropped when the host or port changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url, Version};
use tokio::net::TcpStream;

use super::http_reply::HttpReply;
use super::origin::Origin;
use super::send_error::SendError;

/// How long an idle HTTP/1.1 connection is kept for reuse.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// Idle HTTP/1.1 connections kept per origin: enough for a wide fan-out's
/// next step, bounded so a burst does not keep its sockets for good.
const MAX_IDLE: usize = 1024;

const MAX_REDIRECTS: usize = 10;

/// Times a request refused by an HTTP/2 server before processing is sent
/// again (`REFUSED_STREAM`; safe for any method).
const MAX_REFUSED: usize = 3;

/// The bytes an HTTP/1.1 connection reads at a time, and the largest reply
/// head it accepts. hyper's adaptive default starts at 8 KiB and grows with
/// large bodies up to ~400 KiB a connection; a fixed size keeps every
/// connection's buffer at one size however big the reply, and 8 KiB heads
/// are what common servers accept themselves.
const READ_BUFFER: usize = 8 << 10;

type Sender1 = http1::SendRequest<Full<Bytes>>;
type Sender2 = http2::SendRequest<Full<Bytes>>;

/// The run's connections for `http` tools, by origin.
pub struct Connections {
    /// The plain-HTTP origins spoken to over HTTP/2 with prior knowledge.
    h2c: Arc<[Origin]>,
    /// Few origins per run: a list searched without allocating beats a map
    /// keyed by owned strings.
    origins: Mutex<Vec<Arc<OriginConnections>>>,
    /// Built on the first `https` call: most runs never make one.
    tls: OnceLock<Result<tokio_rustls::TlsConnector, rustls::Error>>,
}

/// One origin's connections.
struct OriginConnections {
    origin: Origin,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Mutex<Vec<(Sender1, Instant)>>,
    /// The origin's HTTP/2 connection. Locked across connecting, so calls
    /// that arrive meanwhile wait for it rather than open their own.
    h2: tokio::sync::Mutex<Option<Sender2>>,
    /// TLS agreed HTTP/1.1 with this origin: later calls skip the HTTP/2
    /// slot and connect in parallel.
    h1_only: AtomicBool,
}

/// A connection ready for one request.
enum Sender {
    /// Returned to the origin's idle list once the reply is read.
    H1(Sender1),
    /// A handle on the origin's shared connection.
    H2(Sender2),
}

impl Connections {
    pub fn new(h2c: Arc<[Origin]>) -> Connections {
        Connections {
            h2c,
            origins: Mutex::new(Vec::new()),
            tls: OnceLock::new(),
        }
    }

    /// Sends a request and reads its reply's body up to `cap` bytes,
    /// following redirects. `headers` are the request's own; `Host` is
    /// added for HTTP/1.1.
    pub async fn exchange(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
        cap: usize,
    ) -> Result<HttpReply, SendError> {
        let (mut method, mut url, mut headers, mut body) = (method, url, headers, body);
        let mut visited: Vec<Url> = Vec::new();
        loop {
            let conns = self.origin(&url)?;
            let (response, sender) = self.send(&conns, &method, &url, &headers, &body).await?;
            if let Some(next) = redirect_target(&url, &response) {
                if visited.len() >= MAX_REDIRECTS || visited.contains(&next) || next == url {
                    return Err(SendError::TooManyRedirects);
                }
                // The redirect's own body is not wanted; reading it to its
                // end (it is short) keeps the connection for the next call.
                let status = response.status();
                if let Ok((_, false)) = read_capped(response.into_body(), 64 << 10).await {
                    conns.release(sender);
                }
                if matches!(
                    status,
                    StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
                ) && method != Method::GET
                    && method != Method::HEAD
                {
                    method = Method::GET;
                    body = Bytes::new();
                    headers.remove(header::CONTENT_TYPE);
                    headers.remove(header::CONTENT_LENGTH);
                    headers.remove(header::TRANSFER_ENCODING);
                }
                // Credentials go only where they were meant to: another
                // origin, or this host over plain HTTP when it was HTTPS,
                // gets none (the origin holds scheme, host and port).
                if !conns.origin.holds(&next) {
                    for name in [
                        header::AUTHORIZATION,
                        header::COOKIE,
                        header::PROXY_AUTHORIZATION,
                        header::WWW_AUTHENTICATE,
                    ] {
                        headers.remove(name);
                    }
                }
                visited.push(std::mem::replace(&mut url, next));
                continue;
            }
            let (parts, incoming) = response.into_parts();
            let (bytes, too_large) = read_capped(incoming, cap).await?;
            // A body not read to its end leaves the connection mid-reply:
            // it is dropped, not reused.
            if !too_large {
                conns.release(sender);
            }
            return Ok(HttpReply {
                status: parts.status,
                headers: parts.headers,
                body: bytes,
                too_large,
            });
        }
    }

    /// The connections of `url`'s origin, made on its first call.
    fn origin(&self, url: &Url) -> Result<Arc<OriginConnections>, SendError> {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = origins.iter().find(|o| o.origin.holds(url)) {
            return Ok(found.clone());
        }
        let origin = Origin::of(url).ok_or(SendError::BadUrl)?;
        let made = Arc::new(OriginConnections {
            origin,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
            h1_only: AtomicBool::new(false),
        });
        origins.push(made.clone());
        Ok(made)
    }

    /// Sends one request (no redirects) on a connection of its origin.
    async fn send(
        &self,
        conns: &OriginConnections,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(hyper::Response<Incoming>, Sender), SendError> {
        // A server refuses the streams over its limit that were opened before
        // its settings arrived, having processed none of them: sent again,
        // they wait for a free stream of the same connection.
        let mut refused = 0;
        loop {
            match self.send_once(conns, method, url, headers, body).await {
                Err(SendError::Request(e)) if refused < MAX_REFUSED && is_refused_stream(&e) => {
                    refused += 1;
                }
                sent => return sent,
            }
        }
    }

    /// One attempt of [`Self::send`].
    async fn send_once(
        &self,
        conns: &OriginConnections,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(hyper::Response<Incoming>, Sender), SendError> {
        let mut sender = self.sender(conns).await?;
        let request = match sender {
            Sender::H1(_) => {
                // HTTP/1.1 names the path on the request line and the host
                // in a header, which hyper's connection API leaves to us.
                let target = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                let mut request = build(method, &target, headers, body, Version::HTTP_11)?;
                if !headers.contains_key(header::HOST) {
                    let host = HeaderValue::from_str(&conns.origin.host_header())
                        .map_err(|_| SendError::BadUrl)?;
                    request.headers_mut().insert(header::HOST, host);
                }
                request
            }
            // HTTP/2 takes the scheme and authority from the URI.
            Sender::H2(_) => {
                let mut request = build(method, url.as_str(), headers, body, Version::HTTP_2)?;
                request.headers_mut().remove(header::HOST);
                request
            }
        };
        let response = match &mut sender {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
        .map_err(SendError::Request)?;
        Ok((response, sender))
    }

    /// A connection for the next request: the origin's HTTP/2 one, an idle
    /// HTTP/1.1 one, or a new one.
    async fn sender(&self, conns: &OriginConnections) -> Result<Sender, SendError> {
        let origin = &conns.origin;
        let prior_knowledge = !origin.tls && self.h2c.contains(origin);
        if prior_knowledge || (origin.tls && !conns.h1_only.load(Ordering::Relaxed)) {
            let mut slot = conns.h2.lock().await;
            if let Some(live) = slot.as_ref().filter(|s| !s.is_closed()) {
                return Ok(Sender::H2(live.clone()));
            }
            *slot = None;
            return match Box::pin(self.connect(origin, prior_knowledge)).await? {
                Sender::H2(made) => {
                    *slot = Some(made.clone());
                    Ok(Sender::H2(made))
                }
                Sender::H1(made) => {
                    conns.h1_only.store(true, Ordering::Relaxed);
                    Ok(Sender::H1(made))
                }
            };
        }
        while let Some(mut idle) = conns.take_idle() {
            if idle.ready().await.is_ok() {
                return Ok(Sender::H1(idle));
            }
        }
        // Boxed, here and above: a TLS handshake's state is kilobytes, and
        // inline it would size every call's future for its whole flight
        // (and every tool call's, whatever its kind), not just while
        // connecting.
        Box::pin(self.connect(origin, false)).await
    }

    /// A new connection to `origin`; HTTP/2 when `prior_knowledge` or when
    /// TLS's ALPN agrees it.
    async fn connect(&self, origin: &Origin, prior_knowledge: bool) -> Result<Sender, SendError> {
        let tcp = TcpStream::connect((origin.bare_host(), origin.port))
            .await
            .map_err(SendError::Connect)?;
        // Requests are written whole; waiting to coalesce them only delays.
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return handshake(TokioIo::new(tcp), prior_knowledge).await;
        }
        let connector = self
            .tls
            .get_or_init(tls_connector)
            .as_ref()
            .map_err(|e| SendError::TlsSetup(e.clone()))?;
        let name = rustls::pki_types::ServerName::try_from(origin.bare_host().to_string())
            .map_err(|_| SendError::BadUrl)?;
        let tls = connector.connect(name, tcp).await.map_err(SendError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        handshake(TokioIo::new(tls), h2).await
    }
}

impl OriginConnections {
    /// The most recently used idle connection still open, dropping those
    /// kept too long or closed by the server meanwhile.
    fn take_idle(&self) -> Option<Sender1> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_FOR {
                return Some(sender);
            }
        }
        None
    }

    /// A connection whose reply was read to its end, kept for the next
    /// call (HTTP/2 handles are clones of the shared one: dropped).
    fn release(&self, sender: Sender) {
        if let Sender::H1(sender) = sender {
            if sender.is_closed() {
                return;
            }
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        }
    }
}

/// The HTTP handshake on a connected stream; the connection is driven by
/// its own task until both ends let go of it.
async fn handshake<T>(io: T, h2: bool) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(connection);
        Ok(Sender::H2(sender))
    } else {
        let (sender, connection) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER))
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(connection);
        Ok(Sender::H1(sender))
    }
}

/// One request; the headers are copied (a redirect needs them again).
fn build(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &Bytes,
    version: Version,
) -> Result<hyper::Request<Full<Bytes>>, SendError> {
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(target)
        .version(version)
        .body(Full::new(body.clone()))
        .map_err(|_| SendError::BadUrl)?;
    *request.headers_mut() = headers.clone();
    Ok(request)
}

/// An HTTP/2 stream the server refused before processing it.
fn is_refused_stream(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// Where a redirect reply points, if it is one worth following (a 3xx
/// with a `Location` that is an http or https URL).
fn redirect_target(url: &Url, response: &hyper::Response<Incoming>) -> Option<Url> {
    if !matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let next = url.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

/// A body read up to `cap` bytes; `true` when it was larger.
async fn read_capped(mut body: Incoming, cap: usize) -> Result<(Vec<u8>, bool), SendError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SendError::Body)?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if bytes.len() + chunk.len() > cap {
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// TLS as reqwest sets it up: the process's crypto provider (ring unless
/// one is installed), TLS 1.2 and 1.3, the webpki root certificates, and
/// ALPN offering HTTP/2 before HTTP/1.1.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
