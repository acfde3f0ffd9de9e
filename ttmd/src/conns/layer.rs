//! Counts a connection's requests in flight, from the request's arrival to
//! the end of its response body, so a connection with an open stream (or a
//! slow request) is never taken for idle; and corrects the code of requests
//! tonic could not decode (see [`crate::service::status::fix_decode_error`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Conn, ConnInfo};

/// The layer to put in front of every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct InFlightLayer;

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight { inner }
    }
}

/// See [`InFlightLayer`].
#[derive(Debug, Clone)]
pub struct InFlight<S> {
    inner: S,
}

/// Held while a request or its response is open.
#[derive(Debug)]
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Busy {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        // The end of a stream counts as activity: the idle time starts now.
        self.0.touch();
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let busy = req
            .extensions()
            .get::<ConnInfo>()
            .map(|info| Busy::new(&info.conn));
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            crate::service::status::fix_decode_error(response.headers_mut());
            Ok(match busy {
                Some(busy) => {
                    response.map(|body| tonic::body::Body::new(Counted { body, _busy: busy }))
                }
                None => response,
            })
        })
    }
}

/// A response body that keeps its connection busy until it is dropped.
struct Counted {
    body: tonic::body::Body,
    _busy: Busy,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
