//! The `--metrics-listen` endpoint: `GET /metrics` over HTTP/1.x, one
//! answer per connection. Hand-written rather than a hyper server: it
//! answers one path with one body, and hyper's server side would add
//! features (and an API surface) for that.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The content type of the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest request head read; a scraper's is a few hundred bytes.
const HEAD_MAX: usize = 8 * 1024;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to take its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; one more is closed unanswered.
pub const CONNECTIONS: usize = 16;

/// Parses `--metrics-listen`: a bare port means 127.0.0.1 (loopback); an
/// address is taken as given, so the endpoint is reachable from the
/// network only when an address says so.
pub fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    let v = v.trim();
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    v.parse::<SocketAddr>().map_err(|_| {
        format!("{v:?} is neither a port (9464, on 127.0.0.1) nor an address (127.0.0.1:9464)")
    })
}

/// Binds `addr`, saying what to do when it cannot.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen for metrics on {addr}: {e}; choose another port \
                 (--metrics-listen) or stop what uses it"
            ),
        )
    })
}

/// Serves `GET /metrics` on `listener` until dropped; `render` makes the
/// body of each answer.
pub async fn serve<F, Fut>(listener: TcpListener, render: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = String> + Send,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of descriptors, for one: try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connections full; closing one unanswered");
            drop(stream);
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, render).await {
                tracing::debug!(error = %e, "metrics request");
            }
            drop(slot);
        });
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, render: F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, render().await),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "ttmd serves metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        reply.push_str(&body);
    }
    let write = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::other("the answer was not taken in time"))?
}

/// Reads up to the blank line ending the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > HEAD_MAX {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_unanswered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, || async { "up 1\n".to_string() }));
        // Idle connections (no request yet) hold every slot.
        let mut idle = Vec::new();
        for _ in 0..CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let get = || async {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
            let mut got = Vec::new();
            let read = c.read_to_end(&mut got);
            let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
            String::from_utf8_lossy(&got).into_owned()
        };
        assert_eq!(get().await, "", "one more is closed unanswered");
        // A slot freed serves the next one.
        drop(idle.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(get().await.starts_with("HTTP/1.1 200 OK"));
        server.abort();
    }

    #[test]
    fn a_bare_port_is_loopback_and_an_address_is_as_given() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_listen("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        assert_eq!(parse_listen("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_listen("localhost").is_err());
    }
}
