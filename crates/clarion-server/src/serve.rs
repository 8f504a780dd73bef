//! Serving a router on a listener with limits against hostile or broken clients: a bound on
//! concurrent connections, a deadline for each request's head, a deadline for its body, and
//! an idle timeout for kept-alive connections.
//!
//! `axum::serve` has none of these: a client that opens a connection and never finishes its
//! headers holds a task and a file descriptor for ever, so a few thousand such connections
//! exhaust the process. hyper's own `header_read_timeout` starts its clock whenever the
//! connection waits for a request, idle or not, so it cannot give a kept-alive connection
//! longer than a request's head; this module keeps its own per-connection clock instead
//! ([`Activity`]) and closes the connection when the clock that applies runs out:
//!
//! - waiting for a request's head (from the accept, or from the first byte after an idle
//!   spell) — `header_timeout`;
//! - idle between requests — `idle_timeout`;
//! - a request in the handler — no connection clock; its body has `body_timeout` from the
//!   moment its head was read ([`DeadlineBody`]), and a body that misses it is answered 408
//!   `request_timeout` with `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::ApiError;

/// How long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// From the accept (or the first byte after an idle spell) to the end of a request's head.
    pub header_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog, unaccepted,
    /// until one closes.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    /// The production defaults (`config.default.toml`'s `[server]` section explains them).
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` is cancelled; then stops
/// accepting, lets requests in progress finish (idle connections close at once) and returns
/// when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = with_body_deadline(router, limits.body_timeout);
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        // A permit before the accept: past the limit, connections stay in the kernel's
        // backlog (and the client's connect waits) rather than costing a task each here.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: the condition passes as
                    // connections close; retrying at once would spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, shutdown).await;
            drop(permit);
        });
    }
    // Every connection holds a permit until it closes: all of them back means all closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, closed when its [`Activity`] clock runs out.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            let in_flight = InFlight::start(activity.clone());
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own head clock would also run while the connection is idle (see the module
    // documentation); this module's clock replaces it.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.expired(limits) => {
                // Dropping the connection closes the socket; nothing is in the handler (the
                // clock does not run then), so no request is cut off.
                tracing::debug!("closing a connection that ran out of time");
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// What a connection is doing, for its clock.
#[derive(Debug)]
struct Activity {
    /// Requests in the handler.
    in_flight: AtomicUsize,
    phase: Mutex<Phase>,
    /// Wakes the clock when the phase changes.
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request's head since this instant.
    AwaitingHead(Instant),
    /// Between requests since this instant, no byte of the next one read yet.
    Idle(Instant),
    /// A request is in the handler.
    Busy,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            // A fresh connection owes its first head at once.
            phase: Mutex::new(Phase::AwaitingHead(Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        if let Ok(mut current) = self.phase.lock() {
            *current = phase;
        }
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        self.phase.lock().map_or(Phase::Busy, |phase| *phase)
    }

    /// Bytes arrived: after an idle spell, they begin the next request's head.
    fn read_some(&self) {
        if let Ok(mut phase) = self.phase.lock()
            && matches!(*phase, Phase::Idle(_))
        {
            *phase = Phase::AwaitingHead(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Resolves when the clock of the current phase has run out.
    async fn expired(&self, limits: ServerLimits) {
        loop {
            let deadline = match self.phase() {
                Phase::AwaitingHead(since) => Some(since + limits.header_timeout),
                Phase::Idle(since) => Some(since + limits.idle_timeout),
                Phase::Busy => None,
            };
            match deadline {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in the handler; dropping it (the response is ready, or the connection went)
/// makes the connection idle once no other request is in.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.set(Phase::Busy);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.set(Phase::Idle(Instant::now()));
        }
    }
}

/// The socket, telling the connection's [`Activity`] when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Gives every request's body `body_timeout` from the moment its head was read; a request
/// whose body missed it is answered 408 `request_timeout` and its connection closed, whatever
/// the handler made of the truncated body.
fn with_body_deadline(router: Router, body_timeout: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| body_deadline(request, next, body_timeout),
    ))
}

async fn body_deadline(request: Request, next: Next, body_timeout: Duration) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
            timed_out: timed_out.clone(),
        })
    });
    let response = next.run(request).await;
    if !timed_out.load(Ordering::SeqCst) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            body_timeout.as_secs_f64()
        ),
    )
    .into_response();
    // The rest of the body may still come: the connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] fails with.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
