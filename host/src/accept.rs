//! The accept loop: the host's own replacement for `axum::serve`, which can neither speak TLS
//! nor bound how long a client may take to send its headers.
//!
//! Per connection, in its own task: count it against [`Bounds::max_connections`] (over the cap
//! it is closed at once: a full host says so immediately instead of leaving clients hanging in
//! the kernel's backlog, and agents retry with backoff), do the TLS handshake within
//! [`Bounds::tls_handshake_timeout`], then serve HTTP/1.1 with upgrades (WebSockets) and a
//! header read timeout. The connection's slot is held by its socket, so an upgraded WebSocket
//! or agent link counts until it closes.
//!
//! Shutdown is the same as `axum::serve`'s graceful shutdown: stop accepting, ask every
//! connection to finish its current request and close, and wait for them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, warn};

/// How often, at most, refusals at the connection cap are logged (with their count).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error other than a failed connection (e.g. out of file descriptors),
/// so the loop does not spin while the process has none to spare.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The bounds every connection is held to; from [`crate::config::Tuning`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` resolves, then
/// drains connections as described in the module docs.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // More permits than a semaphore can hold is no cap at all; clamp instead of panicking.
    let slots = Arc::new(Semaphore::new(
        bounds.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    // `stop` tells connections to finish; each holds a `live` receiver until it has.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (live_tx, live_rx) = watch::channel(());
    let mut refusals = Refusals::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Frames are small and latency-bound (a log batch, a client's lines): Nagle's
        // algorithm with the peer's delayed ACK would hold them up to 40 ms.
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.record(peer, bounds.max_connections);
            drop(stream);
            continue;
        };
        let connection = Connection {
            io: Counted {
                io: stream,
                _slot: slot,
            },
            peer,
            app: app.clone(),
            tls: tls.clone(),
            bounds,
            stop: stop_rx.clone(),
            _live: live_rx.clone(),
        };
        tokio::spawn(connection.serve());
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(live_rx);
    live_tx.closed().await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    io: Counted<TcpStream>,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    bounds: Bounds,
    stop: watch::Receiver<bool>,
    /// Dropped when the connection is done; the accept loop waits for all of them at shutdown.
    _live: watch::Receiver<()>,
}

impl Connection {
    async fn serve(mut self) {
        let Some(acceptor) = self.tls.take() else {
            let io = TokioIo::new(self.io);
            serve_http(io, self.app, self.bounds, self.stop).await;
            return;
        };
        let handshake =
            tokio::time::timeout(self.bounds.tls_handshake_timeout, acceptor.accept(self.io));
        let tls = tokio::select! {
            done = handshake => done,
            _ = self.stop.wait_for(|stop| *stop) => return,
        };
        match tls {
            Ok(Ok(stream)) => {
                serve_http(TokioIo::new(stream), self.app, self.bounds, self.stop).await;
            }
            Ok(Err(e)) => debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(
                peer = %self.peer,
                timeout = ?self.bounds.tls_handshake_timeout,
                "TLS handshake timed out; connection closed"
            ),
        }
    }
}

/// HTTP/1.1 with upgrades on one connection, until it closes or has drained after `stop`.
async fn serve_http<I>(io: TokioIo<I>, app: Router, bounds: Bounds, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn accept_error(e: io::Error) {
    // A client that went away between connect and accept is its own business.
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "accept failed; pausing {ACCEPT_ERROR_PAUSE:?}");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Connections refused at the cap since the last warning, so a flood logs a line per
/// [`REFUSAL_LOG_INTERVAL`] rather than one per connection.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    fn record(&mut self, peer: SocketAddr, cap: usize) {
        self.since_warning += 1;
        debug!(%peer, "connection refused: at the connection cap");
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            warn!(
                cap,
                refused = self.since_warning,
                "at the connection cap (--max-connections); new connections are closed at once"
            );
            self.since_warning = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// A socket that holds one of the [`Bounds::max_connections`] slots for as long as it lives
/// (through TLS and a WebSocket upgrade, which keep the socket inside them).
struct Counted<I> {
    io: I,
    _slot: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
