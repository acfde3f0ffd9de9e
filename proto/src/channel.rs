//! A gRPC channel to ttmd's Unix socket, for Rust clients that do not need
//! more than a plain connection (ttmctl reuses its first probe connection
//! and so builds its own).

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// Connects to the daemon listening on `socket`. The URI is unused except
/// for its authority, which must be `localhost`: the HTTP/2 layer under
/// ttmd rejects a socket path there (see docs/api.md).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    endpoint().connect_with_connector(connector(socket)).await
}

/// The endpoint to connect through, for callers that set timeouts on it.
pub fn endpoint() -> Endpoint {
    Endpoint::from_static("http://localhost")
}

/// A connector that opens a fresh Unix stream to `socket` per connection.
pub fn connector(
    socket: &Path,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let path = socket.to_path_buf();
    tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}
