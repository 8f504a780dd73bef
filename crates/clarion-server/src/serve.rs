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
//!
//! A body its handler answered without reading is read and discarded (up to 256 KiB) before
//! the answer goes, so that the kept-alive connection stays usable ([`with_body_deadline`]).
//!
//! Requests hyper refuses before routing (malformed, or a head over 64 KiB or 100 headers)
//! get the API's JSON error body too ([`WatchedIo`]), and a request target over 8 KiB is 414
//! `uri_too_long` before routing.

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
use http_body::Body as _;
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
    let router = with_uri_limit(with_body_deadline(router, limits.body_timeout));
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
        let (stream, peer) = tokio::select! {
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
            serve_connection(stream, peer, router, limits, shutdown).await;
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
    peer: std::net::SocketAddr,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
        replacement: Vec::new(),
        replacement_written: 0,
        final_heads_written: 0,
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            let in_flight = InFlight::start(activity.clone());
            async move {
                // The peer's address, for limits kept per client (the dashboard's failed
                // sign-ins); behind a proxy it is the proxy's.
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let response = router.oneshot(request).await;
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
        // A request's head must fit in MAX_HEAD_BYTES (larger is answered 431), and the read
        // buffer stays far under hyper's default of about 400 KiB per connection: bodies are
        // read through it in pieces.
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
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

/// The most a request's head (request line and headers) may take, and the most headers it
/// may have; past either hyper answers 431 (with the JSON error body, see [`WatchedIo`]).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// The longest request target (path and query) the router takes; longer is 414
/// `uri_too_long`. Every route's path and query fit in a fraction of it.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// What a connection is doing, for its clock.
#[derive(Debug)]
struct Activity {
    /// Requests in the handler.
    in_flight: AtomicUsize,
    /// Requests handed to the router on this connection, ever.
    requests: AtomicUsize,
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
            requests: AtomicUsize::new(0),
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
        activity.requests.fetch_add(1, Ordering::SeqCst);
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

/// The socket, telling the connection's [`Activity`] when bytes arrive, and giving hyper's
/// own error answers the API's JSON error body.
///
/// hyper answers a request it cannot parse itself — 400 (malformed request line or header),
/// 431 (head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]), 414 — with an empty body and no
/// way to supply one; the router never sees the request. Such an answer is recognised here as
/// a final response head written when every request handed to the router already has its
/// response head written (so it cannot be the router's), and is replaced, whole, by the same
/// status with `{"error": {"code", "message", "field": null}}` and `Connection: close` (hyper
/// closes the connection after it anyway). Writes are not vectored, so each response's head
/// starts a write.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// The JSON answer replacing hyper's own, while not yet all written.
    replacement: Vec<u8>,
    replacement_written: usize,
    /// Final (non-1xx) response heads written on this connection.
    final_heads_written: usize,
}

impl WatchedIo {
    /// Writes what is left of the replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.replacement_written < self.replacement.len() {
            let rest = &self.replacement[self.replacement_written..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.replacement_written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The status of a response head at the start of `buf` (`HTTP/1.x NNN `), if it is one.
fn response_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let (status, _) = rest.get(2..6).zip(rest.get(1).filter(|b| **b == b' '))?;
    let digits = status.get(..3)?;
    if status.get(3) != Some(&b' ') || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The JSON answer for one of hyper's own error statuses.
fn own_error_answer(status: u16) -> Option<Vec<u8>> {
    let (reason, code, message) = match status {
        400 => (
            "Bad Request",
            "invalid_request",
            "the request is not well-formed HTTP/1.1 (request line or headers)",
        ),
        414 => (
            "URI Too Long",
            "uri_too_long",
            "the request target is too long",
        ),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            "the request's headers are too large (at most 100 headers and 64 KiB in all)",
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message, "field": null } })
        .to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
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
        let this = &mut *self;
        if let Poll::Ready(Err(error)) = this.poll_replacement(cx) {
            return Poll::Ready(Err(error));
        }
        if this.replacement_written < this.replacement.len() {
            return Poll::Pending;
        }
        if let Some(status) = response_status(buf).filter(|status| *status >= 200) {
            let routed = this.activity.requests.load(Ordering::SeqCst);
            let hypers_own = this.final_heads_written >= routed;
            this.final_heads_written += 1;
            if hypers_own && let Some(answer) = own_error_answer(status) {
                // hyper's whole answer is taken (its head, with no body), ours goes instead.
                this.replacement = answer;
                this.replacement_written = 0;
                if let Poll::Ready(Err(error)) = this.poll_replacement(cx) {
                    return Poll::Ready(Err(error));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Answers 414 `uri_too_long` for a request target over [`MAX_URI_BYTES`], before routing.
fn with_uri_limit(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |request: Request, next: Next| async move {
            let target_len = request
                .uri()
                .path_and_query()
                .map_or(0, |target| target.as_str().len());
            if target_len > MAX_URI_BYTES {
                return ApiError::new(
                    StatusCode::URI_TOO_LONG,
                    "uri_too_long",
                    format!("the request target is longer than {MAX_URI_BYTES} bytes"),
                )
                .into_response();
            }
            next.run(request).await
        },
    ))
}

/// Gives every request's body `body_timeout` from the moment its head was read; a request
/// whose body missed it is answered 408 `request_timeout` and its connection closed, whatever
/// the handler made of the truncated body.
///
/// A body the handler answered without reading to its end (a 401, 405 or 415 is decided from
/// the head alone) is read and discarded here before the answer goes, up to
/// [`MAX_UNREAD_BODY_DRAINED`] bytes, as Go's `net/http` does: otherwise hyper closes the
/// connection after the answer without saying so, and a client that sent the body in a second
/// packet finds its kept-alive connection closed under its next request ("remote end closed
/// connection without response"). A body larger than that, or one behind
/// `Expect: 100-continue` (its client has not sent it), gets `Connection: close` instead.
fn with_body_deadline(router: Router, body_timeout: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| body_deadline(request, next, body_timeout),
    ))
}

/// The most of a request body left unread by its handler that is read and discarded to keep
/// its connection alive (Go's `net/http` discards up to 256 KiB the same way).
const MAX_UNREAD_BODY_DRAINED: u64 = 256 * 1024;

async fn body_deadline(request: Request, next: Next, body_timeout: Duration) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let unread = Arc::new(Mutex::new(None));
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            rest: Some(TimedBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
            }),
            timed_out: timed_out.clone(),
            unread: unread.clone(),
        })
    });
    let mut response = next.run(request).await;
    if timed_out.load(Ordering::SeqCst) {
        response = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                body_timeout.as_secs_f64()
            ),
        )
        .into_response();
        // The rest of the body may still come: the connection cannot be reused.
        close_after(&mut response);
        return response;
    }
    let left = unread.lock().ok().and_then(|mut slot| slot.take());
    if let Some(rest) = left {
        let drained = !expects_continue && rest.drain(MAX_UNREAD_BODY_DRAINED).await;
        if !drained {
            close_after(&mut response);
        }
    }
    response
}

/// Marks `response` as the connection's last, so that its client does not send another
/// request on a connection the server is about to close.
fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A request body and its deadline.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFailure>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyFailure::Read)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyFailure::TimedOut)));
        }
        Poll::Pending
    }

    /// Reads the rest of the body and discards it: true when it ended within `limit` bytes
    /// and its deadline, so that the connection can take another request.
    async fn drain(mut self, limit: u64) -> bool {
        if self.inner.size_hint().lower() > limit {
            return false;
        }
        let mut discarded: u64 = 0;
        while !self.inner.is_end_stream() {
            match std::future::poll_fn(|cx| self.poll_frame(cx)).await {
                None => break,
                Some(Ok(frame)) => {
                    let length = frame.data_ref().map_or(0, Bytes::len);
                    discarded = discarded.saturating_add(u64::try_from(length).unwrap_or(u64::MAX));
                    if discarded > limit {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
        true
    }
}

/// Why reading a [`TimedBody`] failed.
enum BodyFailure {
    Read(axum::Error),
    TimedOut,
}

/// A request body that fails once its deadline passes, and that hands what its handler left
/// unread back to [`body_deadline`] when dropped.
struct DeadlineBody {
    /// `None` only once dropped.
    rest: Option<TimedBody>,
    timed_out: Arc<AtomicBool>,
    unread: Arc<Mutex<Option<TimedBody>>>,
}

impl Drop for DeadlineBody {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take()
            && !rest.inner.is_end_stream()
            && let Ok(mut slot) = self.unread.lock()
        {
            *slot = Some(rest);
        }
    }
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
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match rest.poll_frame(cx) {
            Poll::Ready(Some(Err(BodyFailure::TimedOut))) => {
                self.timed_out.store(true, Ordering::SeqCst);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
            Poll::Ready(Some(Err(BodyFailure::Read(error)))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest
            .as_ref()
            .is_none_or(|rest| rest.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |rest| rest.inner.size_hint())
    }
}
