//! `ttmd`: the daemon that owns a tree of transactions.
//!
//! Layers, from the inside out: [`core`] (pure rules), [`store`] (the files,
//! synchronous), [`service`] (gRPC). [`run`] recovers the tree and serves an
//! already-bound [`socket::Listener`] until a shutdown future completes; the
//! binary only parses flags, binds and waits for signals.

pub mod config;
pub mod core;
pub mod service;
pub mod socket;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use ttm_proto::v1::ttm_server::TtmServer;

pub use config::Config;
pub use socket::{Listener, bind};

/// Recovers the tree, then serves `listener` until `shutdown` completes:
/// stops accepting, ends open streams, lets in-flight mutations finish, and
/// removes the socket.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = config.root.clone();
    let durability = config.durability;
    let store =
        tokio::task::spawn_blocking(move || store::Store::open(&root, durability)).await??;
    tracing::info!(root = %config.root.display(), socket = %listener.path.display(),
        version = ttm_proto::VERSION, "ttmd serving");
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = service::TtmService::new(Arc::new(store), Arc::new(config), stop_rx);
    let Listener {
        listener,
        path,
        lock,
    } = listener;
    let served = tonic::transport::Server::builder()
        .add_service(TtmServer::new(service))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        })
        .await;
    let _ = std::fs::remove_file(&path);
    drop(lock);
    served?;
    tracing::info!("ttmd stopped");
    Ok(())
}
