//! A request answered before its body was read: a 507 for a disk that filled up half way, a
//! 401 or 403 for a deploy, a 409 for a create-only path that exists. HTTP/1.1 has no way to
//! say "stop sending" but closing the connection, and a server that closes with the client's
//! bytes still unread makes the kernel send a reset, which can destroy the answer before the
//! client reads it, or hit the client's next request on a connection it took for reusable
//! (reqwest: "BodyWrite: broken pipe"). So, as Go's net/http and nginx's lingering close do,
//! the rest of a modest body is read and dropped before the answer goes out, and the
//! connection stays usable; a body too large or too slow for that is not waited for, and the
//! answer says `Connection: close`, so that no client reuses the connection.
//!
//! Never drained: a body that failed (the idle timeout, a reset), and a body nobody asked for
//! under `Expect: 100-continue` (draining it would invite the client to send what is thrown
//! away). HTTP/2 ends one stream, not the connection, and needs none of this.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;
use http_body::{Frame, SizeHint};

/// At most this much of an unread body is read and dropped before an answer.
const DRAIN_BYTES: u64 = 16 << 20;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Middleware: answers each HTTP/1 request only once its body is read to the end, or, where
/// that would take too long, with `Connection: close`.
pub(crate) async fn settle_unread_body(request: Request, next: Next) -> Response {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    let shared = Arc::new(Mutex::new(Shared {
        body: Some(body),
        ..Shared::default()
    }));
    let tracked = Body::new(Tracked(shared.clone()));
    let mut response = next.run(Request::from_parts(parts, tracked)).await;

    let unread = {
        let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let drainable = !state.failed
            && (state.polled || !expects_continue)
            && declared.is_none_or(|n| n.saturating_sub(state.read) <= DRAIN_BYTES);
        match state.body.take() {
            Some(body) => {
                state.taken_back = true;
                Some((body, drainable))
            }
            None if state.failed => Some((Body::empty(), false)),
            None => None,
        }
    };
    let Some((body, drainable)) = unread else {
        return response;
    };
    if !(drainable && drained(body).await) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end and drops it, within `DRAIN_BYTES` and `DRAIN_TIME`; whether it
/// got there.
async fn drained(body: Body) -> bool {
    let mut data = body.into_data_stream();
    let to_end = async {
        let mut read = 0u64;
        while let Some(chunk) = data.next().await {
            let Ok(chunk) = chunk else { return false };
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, to_end)
        .await
        .unwrap_or(false)
}

/// The request body and what became of it, shared by the handler's side and the middleware.
#[derive(Default)]
struct Shared {
    /// `None` once the body ended or failed (nothing left to drain), or the middleware took it
    /// back.
    body: Option<Body>,
    /// Bytes the handler read.
    read: u64,
    /// The handler asked for a frame (so a `100 Continue` has gone out).
    polled: bool,
    /// The body failed: a timeout or a reset; nothing more will come.
    failed: bool,
    /// The middleware took the unread body back after the answer: a handler still reading is
    /// told so, never given a short body.
    taken_back: bool,
}

/// The handler's side of the body.
struct Tracked(Arc<Mutex<Shared>>);

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.polled = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(state.taken_back.then(|| {
                Err(axum::Error::new(
                    "the request was answered before its body was read",
                ))
            }));
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => state.body = None,
            Poll::Ready(Some(Err(_))) => {
                state.failed = true;
                state.body = None;
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.read += data.len() as u64;
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .body
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}
