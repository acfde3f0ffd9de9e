//! Metrics (SPEC §15): what `ttmctl metrics` prints and `--metrics-listen`
//! serves, in the Prometheus text format (`text.rs`; `http.rs` the
//! endpoint).
//!
//! Counters count events appended since the daemon started, as the store
//! announces them durable ([`crate::store::Store::durable_events`]), by
//! the event type's name for the daemon's own types — so types added later
//! (`txn_stalled`, `txn_overdue`) are counted without a change here — and
//! as `user` for every user type, which are free-form (one series each
//! would grow without bound). Gauges are read from
//! the store, the lease table and the stream slots when scraped. The time
//! of the last DONE per module is read from the transactions at start-up,
//! so it survives a restart.

pub mod http;
pub mod text;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::core::event::BUILTIN_TYPES;
use crate::core::fsm::{DONE, FAIL};
use crate::leases::LeaseView;
use crate::store::Store;
use crate::store::module::Durable;
use text::{Counts, Histogram, Kind, LATENCY_BUCKETS, STAGE_BUCKETS, Text};

/// The `event` label of every user event type (`ttmctl event TYPE`), and
/// of lines other programs wrote.
pub const USER_EVENTS: &str = "user";

/// Write-path latencies, timed by the store where a log append and an
/// `fdatasync` happen (one call each, so the write path stays as it is).
/// Process-wide: one daemon per process.
#[derive(Debug)]
pub struct WriteLatency {
    pub append: Histogram,
    pub fsync: Histogram,
}

pub static WRITE: WriteLatency = WriteLatency {
    append: Histogram::new(LATENCY_BUCKETS),
    fsync: Histogram::new(LATENCY_BUCKETS),
};

/// Hook runs, counted by the hook runner.
#[derive(Debug, Default)]
pub struct HookCounts {
    /// Hooks started.
    pub run: AtomicU64,
    /// Runs that did not exit 0 (a non-zero code, a signal, a timeout, a
    /// failure to start).
    pub failed: AtomicU64,
    /// Of those, runs killed at the timeout.
    pub timed_out: AtomicU64,
    /// Hooks refused as unsafe (owner, mode).
    pub refused: AtomicU64,
    /// Events whose hook was not run because the queue was full.
    pub dropped: AtomicU64,
}

/// Event counts and stage durations since start, and the last DONE times.
#[derive(Debug, Default)]
struct Tally {
    /// (module, event type) → appended since start.
    events: BTreeMap<(String, String), u64>,
    /// module → stage changes since start.
    moves: BTreeMap<String, u64>,
    /// (module, txn) → when (epoch seconds) its current stage was entered,
    /// for the visits that began while this daemon ran.
    entered: HashMap<(String, String), f64>,
    /// (module, stage) → durations of visits left.
    stages: BTreeMap<(String, String), Counts>,
    /// module → epoch seconds of the last commit.
    last_done: BTreeMap<String, f64>,
    /// Events the tally fell too far behind to count.
    missed: u64,
}

/// The daemon's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    tally: Mutex<Tally>,
    pub hooks: HookCounts,
    /// Hooks running now.
    pub hooks_running: AtomicU64,
    /// Epoch seconds the daemon started.
    started: f64,
    /// Held while one exposition is made: a scrape lists every
    /// transaction, so scrapes take turns rather than fill the blocking
    /// pool.
    pub rendering: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Epoch seconds of an RFC 3339 time.
fn epoch(ts: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(t.timestamp_millis() as f64 / 1000.0)
}

impl Metrics {
    /// Metrics for `store`, with the last DONE per module read from its
    /// transactions (a DONE transaction's last checkpoint is its commit:
    /// hook outcomes after it do not move it). Call on a blocking thread.
    pub fn new(store: &Store) -> Metrics {
        let mut tally = Tally::default();
        for module in store.modules() {
            for listed in module.list(Some(DONE)) {
                if let Some(t) = epoch(listed.summary.last_checkpoint()) {
                    let last = tally.last_done.entry(module.name.clone()).or_insert(t);
                    *last = last.max(t);
                }
            }
        }
        Metrics {
            tally: Mutex::new(tally),
            started: epoch(&chrono::Utc::now().to_rfc3339()).unwrap_or(0.0),
            ..Metrics::default()
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one durable event.
    pub fn count(&self, d: &Durable) {
        let mut t = self.tally();
        // User event types are free-form: one label value for all of
        // them keeps the series bounded.
        let kind = if BUILTIN_TYPES.contains(&d.event.as_str()) {
            d.event.as_str()
        } else {
            USER_EVENTS
        };
        *t.events
            .entry((d.module.clone(), kind.to_string()))
            .or_insert(0) += 1;
        let at = epoch(&d.ts);
        let key = (d.module.clone(), d.txn_id.clone());
        if !d.from.is_empty() {
            *t.moves.entry(d.module.clone()).or_insert(0) += 1;
            if let (Some(began), Some(now)) = (t.entered.remove(&key), at) {
                let stage = (d.module.clone(), d.from.clone());
                t.stages
                    .entry(stage)
                    .or_insert_with(|| Counts::new(STAGE_BUCKETS))
                    .observe((now - began).max(0.0));
            }
        }
        let moved = !d.from.is_empty() || d.event == "txn_start";
        match at {
            Some(now) if moved && d.stage != DONE && d.stage != FAIL => {
                t.entered.insert(key, now);
            }
            _ => {}
        }
        if d.event == "txn_commit"
            && let Some(now) = at
        {
            let last = t.last_done.entry(d.module.clone()).or_insert(now);
            *last = last.max(now);
        }
    }

    /// Drops the stage clock of `key` (archived or removed while live).
    pub fn forget(&self, key: &crate::core::lease::TxnKey) {
        self.tally().entered.remove(key);
    }

    /// Counts the store's durable events until the feed closes.
    pub async fn follow(self: std::sync::Arc<Self>, mut events: broadcast::Receiver<Durable>) {
        loop {
            match events.recv().await {
                Ok(d) => self.count(&d),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "metrics fell behind the event feed");
                    self.tally().missed += n;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The exposition. Reads the store's listings: call on a blocking
    /// thread.
    pub fn render(&self, store: &Store, leases: &[LeaseView], open_streams: u64) -> String {
        let mut out = Text::default();
        let modules: Vec<String> = store.modules().iter().map(|m| m.name.clone()).collect();
        out.family(
            "ttm_transactions",
            Kind::Gauge,
            "Transactions served, by module and stage.",
        );
        for module in store.modules() {
            let mut by_stage: BTreeMap<String, u64> = BTreeMap::new();
            for listed in module.list(None) {
                *by_stage
                    .entry(listed.summary.stage().to_string())
                    .or_insert(0) += 1;
            }
            for (stage, n) in by_stage {
                let labels = [("module", module.name.as_str()), ("stage", stage.as_str())];
                out.sample("ttm_transactions", &labels, n as f64);
            }
        }
        self.render_tally(&mut out, &modules);
        render_leases(&mut out, leases);
        self.render_daemon(&mut out, open_streams);
        out.into_string()
    }

    // Long: one family after another; the exposition reads in one place.
    fn render_tally(&self, out: &mut Text, modules: &[String]) {
        let t = self.tally();
        let named = [
            (
                "ttm_transitions_total",
                "",
                "Stage changes (transitions, commits, failures, retries, migrations) since start.",
            ),
            ("ttm_commits_total", "txn_commit", "Commits since start."),
            (
                "ttm_failures_total",
                "txn_fail",
                "Failures since start (by a script or a timeout policy).",
            ),
            (
                "ttm_stalls_total",
                "txn_stalled",
                "Transactions found stalled since start.",
            ),
            (
                "ttm_overdue_total",
                "txn_overdue",
                "Deadlines passed since start.",
            ),
        ];
        for (name, event, help) in named {
            out.family(name, Kind::Counter, help);
            for m in modules {
                let n = if event.is_empty() {
                    t.moves.get(m).copied()
                } else {
                    t.events.get(&(m.clone(), event.to_string())).copied()
                };
                out.sample(name, &[("module", m)], n.unwrap_or(0) as f64);
            }
        }
        out.family(
            "ttm_events_total",
            Kind::Counter,
            "Events appended since start, by module and type.",
        );
        for ((m, e), n) in &t.events {
            out.sample(
                "ttm_events_total",
                &[("module", m), ("event", e)],
                *n as f64,
            );
        }
        out.family(
            "ttm_events_missed_total",
            Kind::Counter,
            "Events the metrics fell too far behind to count.",
        );
        out.sample("ttm_events_missed_total", &[], t.missed as f64);
        out.family(
            "ttm_stage_duration_seconds",
            Kind::Histogram,
            "Time spent in a stage, observed when it is left (visits begun since start).",
        );
        for ((m, s), c) in &t.stages {
            out.histogram(
                "ttm_stage_duration_seconds",
                &[("module", m), ("stage", s)],
                c,
            );
        }
        out.family(
            "ttm_last_done_timestamp_seconds",
            Kind::Gauge,
            "Unix time of the last commit (DONE) per module.",
        );
        for (m, at) in &t.last_done {
            out.sample("ttm_last_done_timestamp_seconds", &[("module", m)], *at);
        }
    }

    fn render_daemon(&self, out: &mut Text, open_streams: u64) {
        out.family(
            "ttm_append_seconds",
            Kind::Histogram,
            "Time to append a mutation's lines to its log (before the sync).",
        );
        out.histogram("ttm_append_seconds", &[], &WRITE.append.counts());
        out.family(
            "ttm_fsync_seconds",
            Kind::Histogram,
            "Time of one sync an answer waits for: a log's fdatasync (group commit: one per \
             batch) or a creation's directory sync.",
        );
        out.histogram("ttm_fsync_seconds", &[], &WRITE.fsync.counts());
        out.family(
            "ttm_open_streams",
            Kind::Gauge,
            "Open Events and Watch streams (followers).",
        );
        out.sample("ttm_open_streams", &[], open_streams as f64);
        let h = &self.hooks;
        let hooks = [
            ("ttm_hooks_run_total", &h.run, "Hooks started since start."),
            (
                "ttm_hooks_failed_total",
                &h.failed,
                "Hook runs that did not exit 0 (code, signal, timeout, start failure).",
            ),
            (
                "ttm_hooks_timed_out_total",
                &h.timed_out,
                "Hook runs killed at the hook timeout.",
            ),
            (
                "ttm_hooks_refused_total",
                &h.refused,
                "Hooks refused as unsafe (owner or mode).",
            ),
            (
                "ttm_hooks_dropped_total",
                &h.dropped,
                "Events whose hook was not run because the hook queue was full.",
            ),
        ];
        for (name, n, help) in hooks {
            out.family(name, Kind::Counter, help);
            out.sample(name, &[], n.load(Ordering::Relaxed) as f64);
        }
        out.family("ttm_hooks_running", Kind::Gauge, "Hooks running now.");
        let running = self.hooks_running.load(Ordering::Relaxed);
        out.sample("ttm_hooks_running", &[], running as f64);
        out.family(
            "ttm_start_time_seconds",
            Kind::Gauge,
            "Unix time the daemon started.",
        );
        out.sample("ttm_start_time_seconds", &[], self.started);
    }
}

/// Holders and queue lengths per lease name.
fn render_leases(out: &mut Text, leases: &[LeaseView]) {
    out.family(
        "ttm_lease_held",
        Kind::Gauge,
        "1 when the lease has a holder, else 0.",
    );
    for l in leases {
        let held = if l.holder.is_some() { 1.0 } else { 0.0 };
        out.sample("ttm_lease_held", &[("lease", &l.name)], held);
    }
    out.family(
        "ttm_lease_waiters",
        Kind::Gauge,
        "Transactions queued for the lease.",
    );
    for l in leases {
        let n = l.queue.len() as f64;
        out.sample("ttm_lease_waiters", &[("lease", &l.name)], n);
    }
}

#[cfg(test)]
mod tests;
