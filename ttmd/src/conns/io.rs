//! A served connection: the Unix stream, noting when bytes cross it, and
//! ending (end of file to the server) when it is closed or stays idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::Conn;

/// What a request knows of its connection (in its extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address and credentials.
    pub uds: UdsConnectInfo,
    pub(crate) conn: Arc<Conn>,
}

/// A connection the server reads and writes through.
#[derive(Debug)]
pub struct Tracked {
    stream: UnixStream,
    conn: Arc<Conn>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Tracked {
    pub(super) fn new(stream: UnixStream, conn: Arc<Conn>, idle: Duration) -> Tracked {
        Tracked {
            stream,
            conn,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Whether the connection should end now: it was closed to make room,
    /// or its idle timer ran out while it was idle. Re-arms the timer
    /// otherwise, so the reader is woken when it may next be idle.
    fn ending(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.conn.closing.load(Ordering::Relaxed) {
                return true;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.conn.idle_for(self.idle) {
                tracing::debug!("closing a connection idle for {:?}", self.idle);
                self.conn.closing.store(true, Ordering::Relaxed);
                return true;
            }
            let next = Instant::now() + self.idle;
            self.timer.as_mut().reset(next);
        }
    }
}

impl Connected for Tracked {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            uds: self.stream.connect_info(),
            conn: self.conn.clone(),
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.conn.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                *self.conn.waker.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(cx.waker().clone());
                if self.ending(cx) {
                    // End of file: the server drops the connection.
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
