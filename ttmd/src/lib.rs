//! `ttmd`: the daemon that owns a tree of transactions.
//!
//! Layers, from the inside out: [`core`] (pure rules), [`store`] (the files,
//! synchronous), [`service`] (gRPC). [`run`] recovers the tree and serves an
//! already-bound [`socket::Listener`] until a shutdown future completes; the
//! binary only parses flags, binds and waits for signals.

pub mod cluster;
pub mod config;
pub mod conns;
mod health;
pub mod hooks;
pub mod leases;
mod memory;
pub mod metrics;
pub use ttm_core as core;
pub mod service;
pub mod shutdown;
pub mod socket;
pub mod store;
mod systemd;
pub mod timers;

use std::future::Future;
use std::sync::Arc;

use sd_notify::NotifyState;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use ttm_proto::v1::ttm_server::TtmServer;

pub use config::Config;
pub use socket::{Listener, bind};

use service::{Shared, TtmService};
use shutdown::Shutdown;

/// Any error that ends the daemon.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Recovers the tree, then serves `listener` until `shutdown` completes (or
/// a client asks for a shutdown): stops accepting, ends open streams, lets
/// in-flight requests finish for up to `shutdown_grace`, removes the socket
/// it bound, and releases the tree's lock.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    // Before anything opens files: each connection is one descriptor.
    let fd_room = conns::raise_nofile();
    // Writers started from the file watcher's thread run on the pool too.
    store::txn::use_runtime(tokio::runtime::Handle::current());
    // Bound first: a port in use stops the start with a clear message.
    let mut metrics_listener = match config.metrics_listen {
        Some(addr) => Some(metrics::http::bind(addr).await?),
        None => None,
    };
    let cluster = cluster::Cluster::from_config(&config, &listener.path)?;
    let Listener {
        listener,
        path,
        owned,
        bound,
        lock,
    } = listener;
    let stop = Shutdown::new();
    let (grace, sighup) = (config.shutdown_grace, config.reload_on_sighup);
    let Opened {
        shared,
        mut observers,
        reconciler,
    } = open(config, cluster.clone(), &path, &stop).await?;
    let session = match join_cluster_if_asked(&shared, cluster, &stop).await {
        Ok(session) => session,
        Err(refused) => {
            // Not serving: leave no socket behind for clients to try.
            Listener::remove_bound(&path, owned, bound);
            return Err(refused);
        }
    };
    let mut background = start_background(&shared, sighup, &path, &stop);
    background.append(&mut observers);
    if let Some(listener) = metrics_listener.take() {
        background.push(serve_metrics(listener, &shared));
    }
    let (incoming, acceptor) = conns::accept(listener, shared.clone(), fd_room);
    background.push(acceptor);
    let served = serve(shared, incoming, shutdown, stop, grace).await;
    for task in background {
        task.abort();
    }
    if let Some(session) = session {
        // Revoking the session lets the other hosts see this one leave now
        // rather than after its TTL; bounded, etcd may be down.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), session).await;
    }
    drop(reconciler);
    Listener::remove_bound(&path, owned, bound);
    drop(lock);
    served?;
    tracing::info!("ttmd stopped");
    Ok(())
}

/// The recovered tree and what works on it, before serving.
struct Opened {
    shared: Arc<Shared>,
    /// Subscribed to the store's durable events before serving, so no
    /// event is missed.
    observers: Vec<tokio::task::JoinHandle<()>>,
    /// Picks up hand edits while it lives; none on a read-only tree, which
    /// cannot change and which a reconcile would write.
    reconciler: Option<store::reconcile::Reconciler>,
}

/// Opens the tree, its leases, timers and metrics, in that order: each
/// is rebuilt from what the one before recovered.
async fn open(
    config: Config,
    cluster: Option<Arc<cluster::Cluster>>,
    socket: &std::path::Path,
    stop: &Shutdown,
) -> Result<Opened, BoxError> {
    let store = open_store(&config).await?;
    let leases = open_leases(&store, &config, cluster).await?;
    let timers = open_timers(&store, &leases).await?;
    let reconciler = store
        .read_only()
        .is_none()
        .then(|| store::reconcile::start(store.clone()));
    let metrics = open_metrics(&store).await?;
    let observers = start_observers(&store, &metrics, &config);
    let shared = Shared::new(
        store,
        leases,
        metrics,
        timers,
        config,
        socket.to_path_buf(),
        stop.clone(),
    );
    Ok(Opened {
        shared,
        observers,
        reconciler,
    })
}

/// `GET /metrics` on the `--metrics-listen` socket, rendered per scrape.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    shared: &Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    let s = shared.clone();
    let render = move || {
        let s = s.clone();
        async move { s.metrics_text().await }
    };
    tokio::spawn(metrics::http::serve(listener, render))
}

/// With `--cluster`, joins it (SPEC §16); the session ends with the daemon.
async fn join_cluster_if_asked(
    shared: &Arc<Shared>,
    cluster: Option<Arc<cluster::Cluster>>,
    stop: &Shutdown,
) -> Result<Option<tokio::task::JoinHandle<()>>, BoxError> {
    match cluster {
        Some(cluster) => Ok(Some(join_cluster(shared, cluster, stop).await?)),
        None => Ok(None),
    }
}

/// Opens (and so recovers) the whole tree, on a blocking thread: the
/// daemon serves only after this.
async fn open_store(config: &Config) -> Result<Arc<store::Store>, BoxError> {
    let (root, durability, dirs) = (
        config.root.clone(),
        config.durability,
        config.module_dirs.clone(),
    );
    let store =
        tokio::task::spawn_blocking(move || store::Store::open(&root, durability, dirs)).await??;
    Ok(Arc::new(store))
}

/// Cluster mode: registers this host (one bounded try; the daemon serves
/// anyway when etcd is down) and starts keeping its session, which ends
/// (revoked) once `stop` triggers. Another live daemon with this host id
/// stops the start.
async fn join_cluster(
    shared: &Arc<Shared>,
    cluster: Arc<cluster::Cluster>,
    stop: &Shutdown,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let first = cluster.join().await?;
    shared.set_cluster(cluster.clone());
    // A read-only tree changes nothing, but what it holds is still shown.
    cluster.start_mirror(shared.store.clone(), stop.clone());
    Ok(tokio::spawn(cluster.keep_session(first, stop.clone())))
}

/// Rebuilds the leases from the recovered logs, before serving.
async fn open_leases(
    store: &Arc<store::Store>,
    config: &Config,
    cluster: Option<Arc<cluster::Cluster>>,
) -> Result<Arc<dyn leases::LeaseBackend>, BoxError> {
    let store = store.clone();
    // The holder's host, named to those told "busy" (SPEC §13).
    let host = config.host_id();
    // With --cluster, etcd decides every grant (leases/etcd.rs).
    let gate = cluster.map(|c| Arc::new(leases::etcd::Gate::new(c)));
    let local =
        tokio::task::spawn_blocking(move || leases::Local::open(store, host, gate)).await??;
    Ok(Arc::new(local))
}

/// The metrics, with the last DONE per module read from the tree.
async fn open_metrics(store: &Arc<store::Store>) -> Result<Arc<metrics::Metrics>, BoxError> {
    let store = store.clone();
    let m = tokio::task::spawn_blocking(move || metrics::Metrics::new(&store)).await?;
    Ok(Arc::new(m))
}

/// What follows the store's durable events: the metrics' tally and, on a
/// writable tree, the hooks (a hook's outcome is appended to the log).
fn start_observers(
    store: &Arc<store::Store>,
    metrics: &Arc<metrics::Metrics>,
    config: &Config,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(metrics.clone().follow(store.durable_events()))];
    if let Some(addr) = config.metrics_listen {
        tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    }
    if store.read_only().is_none() {
        tasks.extend(hooks::start(
            store.clone(),
            config.hooks.clone(),
            metrics.clone(),
        ));
    }
    tasks
}

/// Arms the time rules of every loaded transaction (SPEC §14), before
/// serving; what fell due while no daemon ran is applied once the timer
/// runs.
async fn open_timers(
    store: &Arc<store::Store>,
    leases: &Arc<dyn leases::LeaseBackend>,
) -> Result<Arc<timers::Timers>, BoxError> {
    let (store, leases) = (store.clone(), leases.clone());
    let t = tokio::task::spawn_blocking(move || timers::Timers::open(store, leases)).await?;
    Ok(Arc::new(t))
}

/// The tasks beside the server: SIGHUP reloads, the systemd watchdog and,
/// with `--cluster`, the inbox of other hosts' writes.
/// They hold no state that needs a clean stop, so run aborts them.
fn start_background(
    shared: &Arc<Shared>,
    sighup: bool,
    socket: &std::path::Path,
    stop: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (timers, metrics) = (shared.timers.clone(), shared.metrics.clone());
    let gone = Arc::new(move |key: &core::lease::TxnKey| {
        timers.forget(key);
        metrics.forget(key);
    });
    let mut background = vec![
        tokio::spawn(leases::follow_ends(
            shared.leases.clone(),
            shared.store.clone(),
            gone,
        )),
        tokio::spawn(memory::trim_after_bursts(shared.clone())),
    ];
    // An expiry is logged in the holder's log; on a read-only tree leases
    // stay as they were until a writable start rebuilds them.
    if shared.store.read_only().is_none() {
        background.push(tokio::spawn(leases::run_expiry(shared.leases.clone())));
        // Time events are logged too; on a read-only tree nothing is due.
        background.push(tokio::spawn(timers::run(shared.timers.clone())));
    }
    if sighup {
        background.push(tokio::spawn(reload_on_sighup(shared.clone())));
    }
    if let Some(cluster) = shared.cluster() {
        // Other hosts' writes to this host's transactions.
        let service = TtmService::new(shared.clone());
        background.push(tokio::spawn(service.serve_inbox(cluster.clone())));
    }
    if let Some(every) = systemd::watchdog_interval() {
        let watchdog = systemd::watchdog(socket.to_path_buf(), every, stop.clone());
        background.push(tokio::spawn(watchdog));
    }
    background
}

/// Serves ttm.v1 (beside health and reflection) until `stop` is triggered,
/// by `shutdown` or a client; then waits for in-flight requests, for at
/// most `grace`.
async fn serve(
    shared: Arc<Shared>,
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<conns::Tracked>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: Shutdown,
    grace: std::time::Duration,
) -> Result<(), BoxError> {
    // Health: SERVING from here, after recovery; NOT_SERVING once shutdown
    // begins.
    let (mut health, health_service) = health::service(stop.clone());
    health.set_serving::<TtmServer<TtmService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ttm_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    // tonic's own cap is a backstop at twice the limit; below it, requests
    // over limits.request_bytes get RESOURCE_EXHAUSTED naming the key.
    let request_bytes = shared.config().limits.request_bytes;
    let stopping = stop.clone();
    let server = tonic::transport::Server::builder()
        .layer(conns::layer::InFlightLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            // gzip both ways for clients that ask (grpcurl, grpcio with a
            // compression option); ttmctl does not, it gains nothing locally.
            TtmServer::new(TtmService::new(shared.clone()))
                .max_decoding_message_size(request_bytes.saturating_mul(2))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                _ = shutdown => stopping.trigger(),
                _ = stopping.wait() => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
            systemd::notify(&[NotifyState::Stopping]);
            not_serving(&mut health).await;
        });
    // Recovery is done and the socket is listening: connections queue until
    // the server future is polled just below.
    let summary = ready(&shared);
    tracing::info!(root = %shared.store.root.display(), version = ttm_proto::VERSION, "{summary}");
    tokio::select! {
        served = server => served.map_err(BoxError::from),
        () = grace_expired(&stop, grace) => {
            tracing::warn!(?grace, "requests still open after the shutdown grace; exiting anyway");
            Ok(())
        }
    }
}

/// Tells systemd the daemon is ready, with a status line; returns the line.
fn ready(shared: &Shared) -> String {
    let summary = shared.summary();
    systemd::notify(&[NotifyState::Ready, NotifyState::Status(&summary)]);
    summary
}

/// Health says NOT_SERVING for the server (`""`) and `ttm.v1.Ttm`; then the
/// statuses are dropped, which ends open `Health/Watch` streams (after that
/// last message) so they do not hold up the graceful shutdown.
async fn not_serving(health: &mut HealthReporter) {
    for name in ["", ttm_proto::v1::ttm_server::SERVICE_NAME] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
        health.clear_service_status(name).await;
    }
}

/// Completes `grace` after shutdown began; never if it does not begin.
async fn grace_expired(stop: &Shutdown, grace: std::time::Duration) {
    stop.wait().await;
    tokio::time::sleep(grace).await;
}

/// Reloads on every SIGHUP (what `systemctl reload` sends).
async fn reload_on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot listen for SIGHUP; reload with `ttmctl daemon reload`");
        return;
    };
    while hup.recv().await.is_some() {
        // systemd ≥ 253 wants the reload's start time with RELOADING=1.
        let mut states = vec![NotifyState::Reloading];
        states.extend(NotifyState::monotonic_usec_now().ok());
        systemd::notify(&states);
        let s = shared.clone();
        let report = tokio::task::spawn_blocking(move || s.reload())
            .await
            .unwrap_or_else(|e| vec![format!("reload failed: {e}")]);
        for line in &report {
            tracing::info!("reload: {line}");
        }
        ready(&shared);
    }
}
