//! The `http` tool's connections: our own HTTP/1.1 exchange and the `h2`
//! crate's HTTP/2 client (what hyper speaks HTTP/2 with), with a small pool
//! of our own, instead of reqwest's pooled client.
//!
//! Why not reqwest: in a 1,000-wide fan-out every call in flight held, on
//! top of its connection, reqwest's and hyper-util's per-request machinery
//! (a pooled request channel, a boxed connection future, the client's call
//! future: ~21 KiB a call, issue 16). Here a call in flight holds its
//! request, its connection (HTTP/1.1) or one stream of a shared connection
//! (HTTP/2), and nothing else.
//!
//! - HTTP/1.1: one connection per call in flight, spoken by
//!   `http1_connection.rs` from the call's own future: no task, channel or
//!   buffers per connection, which kept hyper's client near 25 KiB a call.
//!   A connection whose reply was read exactly to its end, that neither
//!   side asked to close, waits idle for the origin's next call (at most
//!   [`IDLE_FOR`], as reqwest's pool keeps them); one the server closed
//!   meanwhile is found so before it is used. A request that fails on a
//!   reused connection before any reply is sent once more on a new one
//!   when that is safe ([`may_resend`]).
//! - HTTP/2: one connection per origin, each call a stream of it, driven
//!   by the connection's one task. The first call connects while the others
//!   wait for it, so a fan-out opens one. A call polls its own stream from
//!   its own future: hyper's client spawned a task per request and passed
//!   it and its reply through channels (~1.7 KiB a call in flight). The
//!   connection is set up as hyper's client set it up (its window, frame
//!   and buffer sizes; no server push), and the request's headers are
//!   those hyper sent (no connection-specific ones, a `Content-Length`
//!   where the body's size is known and the method defines a body).
//! - Which one, as `http_client.rs` says: ALPN over TLS, prior knowledge
//!   for the plain origins `FLOWC_H2C` lists, HTTP/1.1 otherwise.
//! - Redirects are followed as reqwest's default policy does: up to ten,
//!   never back to a URL already visited; 301, 302 and 303 turn a request
//!   other than GET or HEAD into a GET without body; credentials are
//!   dropped when the origin (scheme, host or port) changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::http::IDEMPOTENCY_KEY;
use super::http1_connection::{encode_request, Http1Connection};
use super::http1_error::Http1Error;
use super::http1_stream::Http1Stream;
use super::http_reply::HttpReply;
use super::origin::Origin;
use super::reply_head::{has_token, ReplyHead};
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

/// The most of a redirect's own body read to keep its connection.
const REDIRECT_BODY: usize = 64 << 10;

type Sender2 = SendRequest<Bytes>;

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
    idle: Mutex<Vec<(Http1Connection, Instant)>>,
    /// The origin's HTTP/2 connection. Calls that find it connecting wait
    /// for `h2_settled` rather than open their own.
    h2: Mutex<H2Slot>,
    /// Woken when a connect of `h2` ends, whichever way.
    h2_settled: tokio::sync::Notify,
    /// TLS agreed HTTP/1.1 with this origin: later calls skip the HTTP/2
    /// slot and connect in parallel.
    h1_only: AtomicBool,
}

/// Where an origin's HTTP/2 connection is.
enum H2Slot {
    /// None yet, or the last one ended, failed or was cancelled.
    Empty,
    /// A call is connecting for every call of the origin.
    Connecting,
    Live(Sender2),
}

/// The slot's end of a connect, however it ends (cancelled included): the
/// connection made, or an empty slot for the next call to try; and the
/// calls that waited woken.
struct Settling<'a> {
    conns: &'a OriginConnections,
    made: Option<Sender2>,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        let slot = match self.made.take() {
            Some(made) => H2Slot::Live(made),
            None => H2Slot::Empty,
        };
        *self.conns.h2.lock().unwrap_or_else(|p| p.into_inner()) = slot;
        self.conns.h2_settled.notify_waiters();
    }
}

/// A connection ready for one request.
enum Sender {
    /// Ours; returned to the origin's idle list once the reply is read.
    H1(Http1Connection),
    /// A handle on the origin's shared connection.
    H2(Sender2),
}

/// A request sent and its reply's head read; the body still to read.
enum Sent {
    H1 {
        head: ReplyHead,
        connection: Http1Connection,
        /// The request did not ask to close the connection.
        keep: bool,
    },
    H2(http::Response<RecvStream>),
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
            let sent = self.send(&conns, &method, &url, &headers, &body).await?;
            if let Some(next) = redirect_target(&url, sent.status(), sent.headers()) {
                if visited.len() >= MAX_REDIRECTS || visited.contains(&next) || next == url {
                    return Err(SendError::TooManyRedirects);
                }
                let status = sent.status();
                // The redirect's own body is not wanted; reading it to its
                // end (it is short) keeps the connection for the next call.
                let _ = conns.finish(sent, REDIRECT_BODY).await;
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
            return conns.finish(sent, cap).await;
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
            h2: Mutex::new(H2Slot::Empty),
            h2_settled: tokio::sync::Notify::new(),
            h1_only: AtomicBool::new(false),
        });
        origins.push(made.clone());
        Ok(made)
    }

    /// Sends one request (no redirects) on a connection of its origin and
    /// reads its reply's head.
    async fn send(
        &self,
        conns: &OriginConnections,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Sent, SendError> {
        let mut refused = 0;
        let mut fresh = false;
        loop {
            let (sender, reused) = self.sender(conns, fresh).await?;
            let sent = match sender {
                Sender::H1(connection) => {
                    send_h1(&conns.origin, connection, method, url, headers, body).await
                }
                Sender::H2(sender) => send_h2(sender, method, url, headers, body).await,
            };
            match sent {
                // A server refuses the streams over its limit that were
                // opened before its settings arrived, having processed none
                // of them: sent again, they wait for a free stream of the
                // same connection.
                Err(SendError::Request(e)) if refused < MAX_REFUSED && is_refused_stream(&e) => {
                    refused += 1;
                }
                // The server closed the idle connection as it was taken:
                // once more, on a connection of its own.
                Err(SendError::Exchange(e)) if reused && may_resend(&e, method, headers) => {
                    fresh = true;
                }
                sent => return sent,
            }
        }
    }

    /// A connection for the next request, and whether it was idle before
    /// (it may have gone stale): the origin's HTTP/2 one, an idle HTTP/1.1
    /// one unless `fresh`, or a new one.
    async fn sender(
        &self,
        conns: &OriginConnections,
        fresh: bool,
    ) -> Result<(Sender, bool), SendError> {
        let origin = &conns.origin;
        let prior_knowledge = !origin.tls && self.h2c.contains(origin);
        while prior_knowledge || (origin.tls && !conns.h1_only.load(Ordering::Relaxed)) {
            // Made before the slot is read: a connect that ends in between
            // still completes it (`notify_waiters` reaches every `Notified`
            // made before the call).
            let settled = conns.h2_settled.notified();
            let connect = {
                let mut slot = conns.h2.lock().unwrap_or_else(|p| p.into_inner());
                if let H2Slot::Live(live) = &mut *slot {
                    if is_open(live) {
                        return Ok((Sender::H2(live.clone()), false));
                    }
                }
                let connecting = matches!(*slot, H2Slot::Connecting);
                *slot = H2Slot::Connecting;
                !connecting
            };
            if !connect {
                settled.await;
                continue;
            }
            let mut settling = Settling { conns, made: None };
            return match Box::pin(self.connect(origin, prior_knowledge)).await? {
                Sender::H2(made) => {
                    settling.made = Some(made.clone());
                    Ok((Sender::H2(made), false))
                }
                Sender::H1(made) => {
                    conns.h1_only.store(true, Ordering::Relaxed);
                    Ok((Sender::H1(made), false))
                }
            };
        }
        if !fresh {
            if let Some(idle) = conns.take_idle() {
                return Ok((Sender::H1(idle), true));
            }
        }
        // Boxed, here and above: a TLS handshake's state is kilobytes, and
        // inline it would size every call's future for its whole flight
        // (and every tool call's, whatever its kind), not just while
        // connecting.
        Ok((Box::pin(self.connect(origin, false)).await?, false))
    }

    /// A new connection to `origin`; HTTP/2 when `prior_knowledge` or when
    /// TLS's ALPN agrees it.
    async fn connect(&self, origin: &Origin, prior_knowledge: bool) -> Result<Sender, SendError> {
        let tcp = TcpStream::connect((origin.bare_host(), origin.port))
            .await
            .map_err(SendError::Connect)?;
        // Requests are written whole; waiting to coalesce them only delays.
        let _ = tcp.set_nodelay(true);
        // Boxed, the TLS and HTTP/2 handshakes: their state is kilobytes,
        // and inline it would be paid by every plain HTTP/1.1 connect too,
        // a fan-out's thousand of them at once at its start.
        if origin.tls {
            Box::pin(self.secure(origin, tcp)).await
        } else if prior_knowledge {
            Box::pin(handshake_h2(tcp)).await
        } else {
            Ok(Sender::H1(Http1Connection::new(Http1Stream::Tcp(tcp))))
        }
    }

    /// TLS on a new connection, then the version ALPN agreed.
    async fn secure(&self, origin: &Origin, tcp: TcpStream) -> Result<Sender, SendError> {
        let connector = self
            .tls
            .get_or_init(tls_connector)
            .as_ref()
            .map_err(|e| SendError::TlsSetup(e.clone()))?;
        let name = rustls::pki_types::ServerName::try_from(origin.bare_host().to_string())
            .map_err(|_| SendError::BadUrl)?;
        let tls = connector.connect(name, tcp).await.map_err(SendError::Tls)?;
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            return handshake_h2(tls).await;
        }
        Ok(Sender::H1(Http1Connection::new(Http1Stream::Tls(
            Box::new(tls),
        ))))
    }
}

impl OriginConnections {
    /// The most recently used idle connection still open, dropping those
    /// kept too long or closed by the server meanwhile.
    fn take_idle(&self) -> Option<Http1Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut connection, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR && connection.is_usable() {
                return Some(connection);
            }
        }
        None
    }

    /// Reads a sent request's reply body up to `cap` bytes; a connection
    /// whose reply was read exactly to its end, and that neither side
    /// asked to close, is kept for the next call (HTTP/2 handles are
    /// clones of the shared one: dropped).
    async fn finish(&self, sent: Sent, cap: usize) -> Result<HttpReply, SendError> {
        match sent {
            Sent::H1 {
                head,
                mut connection,
                keep,
            } => {
                let (body, too_large) = connection
                    .read_body(head.framing, cap)
                    .await
                    .map_err(SendError::ReplyBody)?;
                // A body not read to its end leaves the connection
                // mid-reply: it is dropped, not reused.
                if keep && head.keep_alive && !too_large && connection.is_drained() {
                    let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    if idle.len() < MAX_IDLE {
                        idle.push((connection, Instant::now()));
                    }
                }
                Ok(HttpReply {
                    status: head.status,
                    headers: head.headers,
                    body,
                    too_large,
                })
            }
            Sent::H2(response) => {
                let (parts, stream) = response.into_parts();
                let (body, too_large) = read_h2_body(stream, cap).await?;
                Ok(HttpReply {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                    too_large,
                })
            }
        }
    }
}

impl Sent {
    fn status(&self) -> StatusCode {
        match self {
            Sent::H1 { head, .. } => head.status,
            Sent::H2(response) => response.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Sent::H1 { head, .. } => &head.headers,
            Sent::H2(response) => response.headers(),
        }
    }
}

/// One request over HTTP/1.1: the path on the request line, the host in a
/// header.
async fn send_h1(
    origin: &Origin,
    mut connection: Http1Connection,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Sent, SendError> {
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let host = (!headers.contains_key(header::HOST)).then(|| origin.host_header());
    let request =
        encode_request(method, &target, host.as_deref(), headers, body).ok_or(SendError::BadUrl)?;
    connection
        .send(request)
        .await
        .map_err(SendError::Exchange)?;
    let head = connection
        .read_head(*method == Method::HEAD)
        .await
        .map_err(SendError::Exchange)?;
    let keep = !has_token(headers, header::CONNECTION, "close");
    Ok(Sent::H1 {
        head,
        connection,
        keep,
    })
}

/// One request as a stream of the origin's HTTP/2 connection, which takes
/// the scheme and authority from the URI. The body, whole, is handed to
/// the connection, which sends it as the server's window allows.
async fn send_h2(
    mut sender: Sender2,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Sent, SendError> {
    let mut request = http::Request::builder()
        .method(method.clone())
        .uri(url.as_str())
        .version(Version::HTTP_2)
        .body(())
        .map_err(|_| SendError::BadUrl)?;
    // The headers are copied: a redirect needs them again.
    let sent = request.headers_mut();
    *sent = headers.clone();
    sent.remove(header::HOST);
    strip_connection_headers(sent);
    if !body.is_empty()
        || !matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
        )
    {
        sent.entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(body.len()));
    }
    let end = body.is_empty();
    let (response, mut stream) = sender
        .send_request(request, end)
        .map_err(SendError::Request)?;
    if !end {
        stream
            .send_data(body.clone(), true)
            .map_err(SendError::Request)?;
    }
    let response = response.await.map_err(SendError::Request)?;
    Ok(Sent::H2(response))
}

/// Removes the headers HTTP/2 forbids (RFC 9113 §8.2.2), as hyper did:
/// connection-specific ones, those `Connection` names, and a `TE` other
/// than `trailers`.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
    if let Some(named) = headers.remove(header::CONNECTION) {
        if let Ok(names) = named.to_str() {
            for name in names.split(',') {
                headers.remove(name.trim());
            }
        }
    }
}

/// Whether a request that failed on a reused HTTP/1.1 connection before
/// any byte of a reply may be sent again on a new one.
///
/// - Nothing of it was written: the server never saw it, any method.
/// - Written, or partly, and then the connection closed or broke without
///   a reply: the server most likely closed the idle connection before
///   reading it (`is_usable` catches the close that had already arrived,
///   not one in flight), but it may have read and processed the request
///   and failed before answering. Sent again only when doing it twice is
///   harmless: an idempotent method (RFC 9110 §9.2.2), or a request with
///   an `Idempotency-Key` (the server deduplicates it; flowc sends one
///   with every effectful tool call).
fn may_resend(e: &Http1Error, method: &Method, headers: &HeaderMap) -> bool {
    match e {
        Http1Error::NotSent(_) => true,
        Http1Error::Write(_) | Http1Error::NoReply(_) => {
            matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ) || headers.contains_key(IDEMPOTENCY_KEY)
        }
        _ => false,
    }
}

/// The HTTP/2 handshake on a connected stream, with hyper's client
/// settings; the connection is driven by its own task until every handle
/// on it and every stream of it is dropped.
async fn handshake_h2<T>(io: T) -> Result<Sender, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_max_send_streams(100)
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .max_frame_size(16 << 10)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .max_local_error_reset_streams(Some(1024))
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(SendError::Request)?;
    tokio::spawn(async move {
        // How it ended reaches every stream still open, as its error.
        let _ = connection.await;
    });
    Ok(Sender::H2(sender))
}

/// Whether a handle's connection still takes new streams: not once it
/// failed, ended, or the server said it goes away (a new one is made then).
fn is_open(sender: &mut Sender2) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    !matches!(sender.poll_ready(&mut cx), Poll::Ready(Err(_)))
}

/// An HTTP/2 stream the server refused before processing it.
fn is_refused_stream(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Where a redirect reply points, if it is one worth following (a 3xx
/// with a `Location` that is an http or https URL).
fn redirect_target(url: &Url, status: StatusCode, headers: &HeaderMap) -> Option<Url> {
    if !matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = headers.get(header::LOCATION)?.to_str().ok()?;
    let next = url.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

/// An HTTP/2 reply's body read up to `cap` bytes; `true` when it was
/// larger. Each chunk read is given back to the stream's window at once,
/// so the server goes on sending; trailers are read (a stream reset after
/// its data fails the body) and dropped.
async fn read_h2_body(mut body: RecvStream, cap: usize) -> Result<(Vec<u8>, bool), SendError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(SendError::Body)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if bytes.len() + chunk.len() > cap {
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    body.trailers().await.map_err(SendError::Body)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback origin whose connects hang: a listener with a backlog of
    /// none that never accepts, its one queue place taken, so the kernel
    /// drops the next connection's SYN. Returned with what must stay alive.
    async fn unreachable() -> (Url, tokio::net::TcpListener, TcpStream) {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("binds");
        let listener = socket.listen(0).expect("listens");
        let addr = listener.local_addr().expect("an address");
        let queued = TcpStream::connect(addr)
            .await
            .expect("the one queued connection");
        let url = Url::parse(&format!("http://{addr}/ping")).expect("a URL");
        (url, listener, queued)
    }

    #[test]
    fn a_cancelled_http2_connect_leaves_the_slot_to_the_next_call() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (url, _listener, _queued) = unreachable().await;
            let origin = Origin::of(&url).expect("an origin");
            let connections = Connections::new(Arc::from([origin]));
            let call = || {
                connections.exchange(
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    Bytes::new(),
                    1024,
                )
            };
            // The first call connects and is cancelled (a timeout) while it
            // does; the second had found it connecting and waits for it.
            let first = tokio::time::timeout(Duration::from_millis(200), call());
            let second = tokio::time::timeout(Duration::from_millis(600), call());
            let (first, second) = tokio::join!(first, second);
            assert!(
                first.is_err(),
                "the connect hangs, and the call is cancelled"
            );
            assert!(
                second.is_err(),
                "the second call connects in turn, and hangs too"
            );
            let conns = connections.origin(&url).expect("the origin's connections");
            assert!(
                matches!(*conns.h2.lock().unwrap(), H2Slot::Empty),
                "no connect left in the slot"
            );
        });
    }
}
