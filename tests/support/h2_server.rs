//! A loopback server that speaks both HTTP/1.1 and HTTP/2 without TLS
//! (h2c, prior knowledge), for the tests and the bench that must see which
//! version flowc's calls used: it counts the connections it accepted and
//! records the version of every request, in its own runtime on its own
//! thread. Every request is answered `{"ok": true}` after `delay`, so calls
//! started together are all in flight at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    versions: Mutex<Vec<Version>>,
    /// When each request arrived, on [`monotonic_ns`]'s clock.
    arrivals: Mutex<Vec<u64>>,
}

pub struct H2Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    // Dropping it stops the server's runtime.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl H2Server {
    /// Starts a server answering every request after `delay`, accepting up
    /// to `streams` concurrent HTTP/2 streams on one connection.
    pub fn start(delay: Duration, streams: u32) -> H2Server {
        // A backlog for a thousand connections arriving at once (the
        // standard library's 128 would drop SYNs, and the client would wait
        // a second to retry them).
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("binds a port");
        let addr = socket.local_addr().expect("an address");
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_seen = seen.clone();
        // Calls may start as soon as this returns: it waits for the listen.
        let (listening, ready) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = socket.listen(4096).expect("listens");
                let _ = listening.send(());
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        server_seen.connections.fetch_add(1, Ordering::SeqCst);
                        let seen = server_seen.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req: Request<Incoming>| {
                                seen.versions.lock().unwrap().push(req.version());
                                seen.arrivals.lock().unwrap().push(monotonic_ns());
                                async move {
                                    tokio::time::sleep(delay).await;
                                    Ok::<_, Infallible>(
                                        Response::builder()
                                            .header("content-type", "application/json")
                                            .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                                            .expect("a response"),
                                    )
                                }
                            });
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            builder.http2().max_concurrent_streams(streams);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        ready.recv().expect("the server listens");
        H2Server {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as `FLOWC_H2C` lists it.
    pub fn origin(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// When each request arrived, in arrival order, on [`monotonic_ns`]'s
    /// clock; the record is cleared.
    pub fn take_arrivals(&self) -> Vec<u64> {
        std::mem::take(&mut *self.seen.arrivals.lock().unwrap())
    }

    /// The version of every request received so far, in arrival order.
    pub fn versions(&self) -> Vec<Version> {
        self.seen.versions.lock().unwrap().clone()
    }
}

/// The machine's monotonic clock in nanoseconds: the same clock in every
/// process, so a client process can say when it started and the server
/// when each of its requests arrived.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the `timespec` it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0;
    assert!(ok, "the monotonic clock reads");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
