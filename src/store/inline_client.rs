//! A PostgreSQL client whose I/O runs on the calling thread.
//!
//! The store is called from inside the run's tokio runtime, where a
//! blocking client that starts a runtime of its own (the `postgres` crate)
//! may not run: it had to live on a thread of its own, so every store call
//! crossed to that thread and back, two more thread wake-ups per checkpoint
//! than the round trip itself, each a scheduling delay on a busy machine.
//!
//! Here a `tokio_postgres` client and its connection are polled by hand on
//! the caller's thread over a non-blocking standard socket: when neither can
//! move, the thread waits in `poll(2)` for the socket (readable; writable too
//! when a write could not finish). No reactor is involved, so this works
//! inside any runtime, or none, and blocks only its caller, as a SQLite write
//! does. The socket belongs to no runtime, so a connection outlives the run
//! that opened it (workers keep them, see `postgres::keep_connections`).

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::error::Severity;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

/// The connection's half of a client: it reads and writes the socket.
type Background =
    Pin<Box<dyn Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>>;

pub(super) struct InlineClient {
    /// `None` only while the client is dropped (see `Drop`).
    client: Option<tokio_postgres::Client>,
    connection: Background,
    /// Set once the connection's future has ended (the server closed it, or
    /// an I/O error): every later call fails at once.
    ended: bool,
    wait: SocketWait,
}

impl InlineClient {
    /// Connects to the first host of `config` that answers, with TLS when
    /// the server offers it (or `sslmode` requires it).
    pub fn connect(config: &Config) -> Result<InlineClient> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = MakeRustlsConnect::with_webpki_roots();
        let (socket, host) = open_socket(config)?;
        let wait = socket.wait();
        let tls = <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut tls, &host)
            .map_err(|e| StoreError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
        let (client, connection) = drive(&wait, None, config.connect_raw(socket, tls))?
            .map_err(|e| StoreError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(InlineClient {
            client: Some(client),
            connection: Box::pin(connection),
            ended: false,
            wait,
        })
    }

    /// Whether the connection is gone (the server closed it or it failed).
    pub fn is_closed(&self) -> bool {
        self.ended
            || self
                .client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
    }

    /// Runs one call of the client (`call` makes its future), polling the
    /// connection on this thread until the call is done.
    fn run<'s, T, F>(&'s mut self, call: impl FnOnce(&'s tokio_postgres::Client) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, tokio_postgres::Error>> + 's,
    {
        let InlineClient {
            client,
            connection,
            ended,
            wait,
        } = self;
        let client = client.as_ref().ok_or_else(closed)?;
        drive_call(ended, wait, connection, call(client))
    }

    pub fn prepare(&mut self, sql: &str) -> Result<Statement> {
        self.run(|c| c.prepare(sql))
    }

    pub fn query(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.run(|c| c.query(statement, params))
    }

    pub fn execute(
        &mut self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        self.run(|c| c.execute(statement, params))
    }

    /// Runs `sql` (one statement or several, no parameters) by the simple
    /// protocol.
    pub fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.run(|c| c.batch_execute(sql))
    }
}

/// Polls `f`, a call on the client, with the connection until `f` is
/// done; a connection that ended or failed stays ended.
fn drive_call<T>(
    ended: &mut bool,
    wait: &SocketWait,
    connection: &mut Background,
    f: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    if *ended {
        return Err(closed());
    }
    let out = drive(wait, Some((connection, &mut *ended)), f);
    match out {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => {
            // An error that is not the server refusing one statement (I/O,
            // a closed connection, a FATAL the server closes the
            // connection after) ends the connection: the next call
            // reconnects instead of failing again on it.
            let refused = e
                .as_db_error()
                .is_some_and(|db| db.parsed_severity() == Some(Severity::Error));
            if !refused {
                *ended = true;
            }
            Err(e.into())
        }
        Err(e) => {
            *ended = true;
            Err(e)
        }
    }
}

impl Drop for InlineClient {
    /// Says goodbye to the server (`Terminate`) before the socket closes,
    /// as a client that ran its own connection task would: dropping the
    /// client ends the connection's request stream, and the connection then
    /// sends `Terminate` and shuts the socket down without waiting for an
    /// answer.
    fn drop(&mut self) {
        drop(self.client.take());
        if !self.ended {
            let _ = drive(&self.wait, None, self.connection.as_mut());
        }
    }
}

fn closed() -> StoreError {
    StoreError::Failed("the PostgreSQL connection is closed".into())
}

/// Polls `f` and the connection (when there is one) on this thread until
/// `f` is ready, waiting for the socket when neither can move. A connection
/// that ends first ends the call with its error.
fn drive<F: Future>(
    wait: &SocketWait,
    mut connection: Option<(&mut Background, &mut bool)>,
    f: F,
) -> Result<F::Output> {
    // The two futures wake each other through the client's channels (an
    // answer for `f`; room in a bounded channel for the connection, which
    // may be holding answers it has already read): the flag says so, and
    // the thread waits for the socket only after a round of polls in which
    // nothing was woken.
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        woken.0.store(false, Ordering::Relaxed);
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        if let Some((c, ended_flag)) = connection.as_mut() {
            match c.as_mut().poll(&mut cx) {
                Poll::Pending => {}
                Poll::Ready(ended) => {
                    // Never polled again: the next call reconnects.
                    **ended_flag = true;
                    // The connection may have delivered `f`'s answer before
                    // it ended.
                    if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                        return Ok(out);
                    }
                    return Err(match ended {
                        Ok(()) => closed(),
                        Err(e) => StoreError::from(e),
                    });
                }
            }
        }
        if !woken.0.load(Ordering::Relaxed) {
            wait.wait()?;
        }
    }
}

/// Set when either future is woken during a round of polls.
struct Woken(AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Opens a socket to the first of the configuration's hosts that accepts
/// one; returns it with the host's name (for TLS).
fn open_socket(config: &Config) -> Result<(Socket, String)> {
    let hosts = config.get_hosts();
    if hosts.is_empty() {
        return Err(StoreError::Failed(
            "cannot connect to PostgreSQL: the URL names no host".into(),
        ));
    }
    let ports = config.get_ports();
    let mut last = None;
    for (i, host) in hosts.iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        // The server never offers TLS on a Unix socket; the name is only
        // asked for if it did.
        let opened = match host {
            Host::Tcp(name) => open_tcp(config, name, port).map(|s| (Stream::Tcp(s), name.clone())),
            Host::Unix(dir) => UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .map(|s| (Stream::Unix(s), "localhost".to_string())),
        };
        match opened {
            Ok((stream, name)) => return Ok((Socket::new(stream)?, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(StoreError::Failed(format!(
        "cannot connect to PostgreSQL: {}",
        last.map_or_else(|| "no address".to_string(), |e| e.to_string())
    )))
}

fn open_tcp(config: &Config, name: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (name, port).to_socket_addrs()? {
        let stream = match config.get_connect_timeout() {
            Some(t) => TcpStream::connect_timeout(&addr, *t),
            None => TcpStream::connect(addr),
        };
        match stream {
            Ok(stream) => {
                // Each statement is a small request answered at once:
                // Nagle's delay would hold it back.
                stream.set_nodelay(true)?;
                if config.get_keepalives() {
                    let mut keepalive =
                        socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                    if let Some(interval) = config.get_keepalives_interval() {
                        keepalive = keepalive.with_interval(interval);
                    }
                    if let Some(retries) = config.get_keepalives_retries() {
                        keepalive = keepalive.with_retries(retries);
                    }
                    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                }
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// A non-blocking standard socket, read and written through tokio's I/O
/// traits without a reactor: `Pending` means "would block", and the caller
/// waits for the socket itself (`SocketWait`).
pub(super) struct Socket {
    stream: Stream,
    /// Whether the last write found no room (the wait then also waits for
    /// the socket to be writable).
    write_blocked: Arc<AtomicBool>,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn new(stream: Stream) -> Result<Socket> {
        let set = match &stream {
            Stream::Tcp(s) => s.set_nonblocking(true),
            Stream::Unix(s) => s.set_nonblocking(true),
        };
        set.map_err(|e| StoreError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Socket {
            stream,
            write_blocked: Arc::default(),
        })
    }

    fn wait(&self) -> SocketWait {
        let fd = match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        SocketWait {
            fd,
            write_blocked: self.write_blocked.clone(),
        }
    }
}

/// What a waiting thread needs of the socket: its descriptor (valid while
/// the connection that owns the socket lives, which outlives every wait),
/// and whether a write is waiting for room.
struct SocketWait {
    fd: RawFd,
    write_blocked: Arc<AtomicBool>,
}

impl SocketWait {
    /// Blocks until the socket is readable (or writable, when a write
    /// waits), or has failed or closed: the next poll finds out which.
    fn wait(&self) -> Result<()> {
        let mut events = libc::POLLIN;
        if self.write_blocked.load(Ordering::Relaxed) {
            events |= libc::POLLOUT;
        }
        let mut fd = libc::pollfd {
            fd: self.fd,
            events,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, and the descriptor is open (see
            // `SocketWait`).
            let n = unsafe { libc::poll(&mut fd, 1, -1) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(StoreError::Failed(format!(
                    "waiting for PostgreSQL failed: {e}"
                )));
            }
        }
    }
}

/// `Pending` for "would block": the driver polls again after `poll(2)`.
fn nonblocking<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = match &mut self.get_mut().stream {
            Stream::Tcp(s) => s.read(buf.initialize_unfilled()),
            Stream::Unix(s) => s.read(buf.initialize_unfilled()),
        };
        nonblocking(read).map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.stream {
            Stream::Tcp(s) => s.write(data),
            Stream::Unix(s) => s.write(data),
        };
        let polled = nonblocking(written);
        this.write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = match &self.get_mut().stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
        nonblocking(shut)
    }
}
