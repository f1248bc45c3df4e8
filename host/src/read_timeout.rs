//! The request body read timeout: a body that stops arriving (a `Content-Length` larger than
//! what the client sends, a stalled chunked upload) is answered `408 request_timeout` with
//! `Connection: close` after [`crate::config::Tuning::body_read_timeout`] without a byte,
//! instead of holding the connection and the handler forever.
//!
//! It is a gap, not a total, so a large plugin upload over a slow link passes while it keeps
//! moving. Only requests that have a body are wrapped: WebSocket upgrades (GET, no body) and
//! the connections they become are never cut by it. The handler's own error for the failed
//! read (whatever its extractor makes of it) is replaced by the 408, so the answer does not
//! depend on how each handler reads its body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// Middleware (`axum::middleware::from_fn_with_state`, state = the timeout) applying the body
/// read timeout to one request.
pub async fn limit_body(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let req = req.map(|body| {
        Body::new(TimedBody {
            inner: body,
            timeout,
            sleep: None,
            expired: flag,
        })
    });
    let response = next.run(req).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    tracing::debug!(?timeout, "request body stalled; answering 408");
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body stopped arriving for {}s",
            timeout.as_secs_f64()
        ),
    )
    .into_response();
    // The rest of the body may still come; the connection cannot be reused after it.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a body read failed: nothing arrived for the timeout.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {0:?}")]
struct Stalled(Duration);

/// A request body that fails once no frame has arrived for `timeout`. The clock starts at the
/// first read, so a handler that waits (e.g. for a validation slot) before reading is not
/// penalised for it.
struct TimedBody {
    inner: Body,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                sleep.as_mut().reset(Instant::now() + timeout);
                Poll::Ready(frame)
            }
            Poll::Pending => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(axum::Error::new(Stalled(timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
