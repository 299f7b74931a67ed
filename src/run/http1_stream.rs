//! The byte stream an HTTP/1.1 connection speaks over: plain TCP, or TLS
//! on TCP when ALPN agreed `http/1.1` (or nothing).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connected stream.
pub enum Http1Stream {
    Tcp(TcpStream),
    /// Boxed: TLS's state is kilobytes, which a plain connection (and the
    /// future that holds it) should not be sized for.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Http1Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Http1Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Http1Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Http1Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Http1Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Http1Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Http1Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Http1Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Http1Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Http1Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
