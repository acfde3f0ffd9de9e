//! The daemon's state shared by every request: the store, the live config
//! (swapped by a reload), the stream slots, and the shutdown signal.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use super::streams;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::leases::LeaseBackend;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::timers::Timers;

/// What every request handler shares: the store, the live config, and the
/// daemon's own bookkeeping.
#[derive(Debug)]
pub struct Shared {
    /// The tree.
    pub store: Arc<Store>,
    /// Leases on targets and names (SPEC §13).
    pub leases: Arc<dyn LeaseBackend>,
    /// Counters and histograms (SPEC §15).
    pub metrics: Arc<Metrics>,
    /// Stage timeouts, deadlines and stalls (SPEC §14).
    pub timers: Arc<Timers>,
    /// The settings in force; a reload swaps them.
    config: RwLock<Arc<Config>>,
    /// When serving began, for uptime.
    pub(super) started: Instant,
    /// Open Events and Watch streams.
    pub(super) streams: Arc<streams::Slots>,
    /// The daemon's stop signal: the Shutdown RPC triggers it, open
    /// streams end on it.
    pub(super) shutdown: Shutdown,
    /// The socket served, for status.
    pub(super) socket: PathBuf,
    /// The root with symlinks resolved, to compare with the tree a client
    /// names.
    pub(super) canonical_root: PathBuf,
    /// This daemon's seat in the etcd cluster; unset without `--cluster`.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Shared {
    /// Bookkeeping for a daemon serving `store` on `socket`.
    pub fn new(
        store: Arc<Store>,
        leases: Arc<dyn LeaseBackend>,
        metrics: Arc<Metrics>,
        timers: Arc<Timers>,
        config: Config,
        socket: PathBuf,
        shutdown: Shutdown,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            started: Instant::now(),
            streams: Arc::default(),
            canonical_root: std::fs::canonicalize(&store.root)
                .unwrap_or_else(|_| store.root.clone()),
            store,
            leases,
            metrics,
            timers,
            shutdown,
            socket,
            cluster: OnceLock::new(),
        })
    }

    /// Cluster mode: the daemon's seat, set once before serving.
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The daemon's seat in the cluster; `None` without `--cluster`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the config file, the topology and every loaded module's
    /// FSM; a bad file is reported and what was in use kept. One line per
    /// thing looked at, for the log and the caller.
    pub fn reload(&self) -> Vec<String> {
        let mut report = Vec::new();
        let current = self.config();
        match current.reloaded() {
            Ok((next, _)) if next.config_file.is_none() => {
                report.push("no config file; settings unchanged".to_string());
            }
            Ok((next, notes)) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                report.push("config reloaded".to_string());
                report.extend(notes);
            }
            Err(e) => report.push(format!(
                "config not reloaded: {e}; keeping the settings in use"
            )),
        }
        match self.store.reload_topology() {
            Ok(line) | Err(line) => report.push(line),
        }
        for module in self.store.modules() {
            report.push(match module.reload_fsm() {
                Ok(line) => line,
                Err(e) => format!("module {}: {e}; keeping the FSM in use", module.name),
            });
        }
        // Stage timeouts may have changed with the FSMs.
        self.timers.rearm_all();
        if let Some(why) = self.store.read_only() {
            // Leaving it means redoing start-up: the lock file, the logs
            // opened for appending, the repairs left pending.
            report.push(format!(
                "still read-only ({why}): a reload does not leave read-only mode; once the \
                 tree is remounted read-write, restart ttmd"
            ));
        }
        report
    }

    /// The most streams open at once since the last reset, and how many
    /// are open now.
    pub fn stream_peak_and_open(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.streams.peak.load(Ordering::Relaxed),
            self.streams.open(),
        )
    }

    /// Starts a new peak from the streams open now.
    pub fn reset_stream_peak(&self) {
        use std::sync::atomic::Ordering;
        self.streams
            .peak
            .store(self.streams.open(), Ordering::Relaxed);
    }

    /// The metrics exposition (the store's listings are read on a blocking
    /// thread).
    pub async fn metrics_text(self: &Arc<Self>) -> String {
        let s = self.clone();
        // One exposition at a time, held until it is made even when the
        // one who asked has gone.
        let turn = self.metrics.rendering.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let leases = s.leases.list();
            s.metrics.render(&s.store, &leases, s.streams.open())
        })
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"))
    }

    /// One line for `systemctl status` and the log.
    pub fn summary(&self) -> String {
        let modules = self.store.modules();
        let txns: usize = modules.iter().map(|m| m.count()).sum();
        let mode = match self.store.read_only() {
            None => String::new(),
            Some(why) => format!(
                " read-only ({why}; writes are refused, {} repair(s) pending)",
                self.store.pending_repairs().len()
            ),
        };
        format!(
            "serving {txns} transaction(s) in {} module(s){mode} on {}",
            modules.len(),
            self.socket.display()
        )
    }
}
