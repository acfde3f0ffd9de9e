//! Hooks (SPEC §15): an executable named after an event
//! (`core::hooks::HOOKS`), in `<module>/hooks/` or the `hooks.dir`
//! setting, run after that event is durable.
//!
//! Never on a writer's path: the store announces durable events on a
//! broadcast feed ([`crate::store::Store::durable_events`]) and returns; a
//! dispatcher task takes them from there into a bounded queue, and
//! `hooks.concurrency` workers run them. A full queue (or a feed the
//! dispatcher fell behind) drops the event's hook with a warning and a
//! count (`ttm_hooks_dropped_total`) rather than slowing anyone.
//! Each outcome is appended as a `hook_ran` annotation, which runs no hook.
//!
//! - `safety.rs`: which files may run;
//! - `run.rs`: one run (process group, stdin, bounded output, timeout).

mod run;
pub mod safety;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Mutex, broadcast, mpsc};

use crate::config;
use crate::core::event::Body;
use crate::core::hooks::hook_for;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::module::Durable;
use crate::store::txn::Guards;
use run::End;

/// One hook to run for one event.
#[derive(Debug)]
struct Job {
    event: Durable,
    hook: &'static str,
    path: PathBuf,
}

/// What the runner needs.
#[derive(Debug)]
struct Runner {
    store: Arc<Store>,
    settings: config::Hooks,
    metrics: Arc<Metrics>,
}

/// Starts the dispatcher and the workers; they end when the tasks are
/// aborted (at shutdown: a running hook is killed with its task).
pub fn start(
    store: Arc<Store>,
    settings: config::Hooks,
    metrics: Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let events = store.durable_events();
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let workers = settings.concurrency.max(1);
    let runner = Arc::new(Runner {
        store,
        settings,
        metrics,
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = vec![tokio::spawn(dispatch(runner.clone(), events, tx))];
    for _ in 0..workers {
        tasks.push(tokio::spawn(work(runner.clone(), rx.clone())));
    }
    tasks
}

/// Queues the hook of each durable event that has one.
async fn dispatch(
    runner: Arc<Runner>,
    mut events: broadcast::Receiver<Durable>,
    tx: mpsc::Sender<Job>,
) {
    let mut drops = Drops::default();
    loop {
        match events.recv().await {
            Ok(event) => {
                let Some(job) = runner.job_for(event) else {
                    continue;
                };
                if let Err(mpsc::error::TrySendError::Full(job)) = tx.try_send(job) {
                    runner.metrics.hooks.dropped.fetch_add(1, Ordering::Relaxed);
                    drops.note(&job, runner.settings.queue);
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                runner.metrics.hooks.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    missed = n,
                    "hooks fell behind the event feed; their hooks are not run"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Warnings about hooks dropped for a full queue: the first of a burst
/// names the event, then at most one line per [`Drops::EVERY`] says how
/// many more (a flood of warnings would cost the daemon what the queue
/// saved it).
#[derive(Debug, Default)]
struct Drops {
    last: Option<std::time::Instant>,
    since: u64,
}

impl Drops {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn note(&mut self, job: &Job, queue: usize) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let e = &job.event;
        tracing::warn!(
            module = %e.module, txn = %e.txn_id, seq = e.seq, hook = job.hook, dropped = self.since,
            "hook not run: {queue} hook runs already wait (hooks.queue); raise hooks.queue or \
             hooks.concurrency, or make the hook faster (counted in ttm_hooks_dropped_total)"
        );
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// Runs queued hooks, one at a time per worker.
async fn work(runner: Arc<Runner>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = rx.lock().await.recv().await;
        let Some(job) = job else {
            return;
        };
        runner.run(job).await;
    }
}

impl Runner {
    /// The hook `event` runs, if its file exists: the module's own
    /// `hooks/<name>` first, then `hooks.dir`.
    fn job_for(&self, event: Durable) -> Option<Job> {
        if event.annotation {
            return None;
        }
        let hook = hook_for(&event.event)?;
        let module = self.store.module(&event.module, false).ok()?;
        let own = module.dir().join("hooks").join(hook);
        let shared = self.settings.dir.as_ref().map(|d| d.join(hook));
        let path = std::iter::once(own)
            .chain(shared)
            .find(|p| p.symlink_metadata().is_ok())?;
        Some(Job { event, hook, path })
    }

    async fn run(&self, job: Job) {
        let e = &job.event;
        if let Err(reason) = safety::check(&job.path) {
            self.metrics.hooks.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(module = %e.module, txn = %e.txn_id, seq = e.seq, hook = job.hook, "hook refused: {reason}");
            self.record(&job, "refused", None, None, 0, reason).await;
            return;
        }
        let input = self.event_line(e).await;
        let env = [
            ("TTM_MODULE", e.module.clone()),
            ("TTM_TXN_ID", e.txn_id.clone()),
            ("TTM_STAGE", e.stage.clone()),
            ("TTM_EVENT", e.event.clone()),
            ("TTM_TXN_DIR", e.txn_dir.display().to_string()),
            ("TTM_SEQ", e.seq.to_string()),
            ("TTM_TS", e.ts.clone()),
            ("TTM_HOOK", job.hook.to_string()),
            ("TETRA_DIR", self.store.root.display().to_string()),
        ];
        let m = &self.metrics;
        m.hooks.run.fetch_add(1, Ordering::Relaxed);
        m.hooks_running.fetch_add(1, Ordering::Relaxed);
        let (timeout, cap) = (self.settings.timeout, self.settings.output);
        let ran = run::run(&job.path, &e.txn_dir, &input, &env, timeout, cap).await;
        m.hooks_running.fetch_sub(1, Ordering::Relaxed);
        log_output(&job, &ran);
        let ms = u64::try_from(ran.duration.as_millis()).unwrap_or(u64::MAX);
        let (outcome, code, signal, reason) = match ran.end {
            End::Exited(c) => ("exited", Some(i64::from(c)), None, String::new()),
            End::Signaled(s) => ("signaled", None, Some(i64::from(s)), String::new()),
            End::TimedOut => (
                "timeout",
                None,
                Some(9),
                format!("killed after {} s (hooks.timeout_secs)", timeout.as_secs()),
            ),
            End::NotStarted(why) => ("error", None, None, why),
        };
        if code != Some(0) {
            m.hooks.failed.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == "timeout" {
            m.hooks.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(module = %e.module, txn = %e.txn_id, seq = e.seq, hook = job.hook, "{reason}");
        }
        self.record(&job, outcome, code, signal, ms, reason).await;
    }

    /// The event's line as the log holds it, newline included; an empty
    /// object naming it if the line cannot be read (removed meanwhile).
    async fn event_line(&self, e: &Durable) -> Vec<u8> {
        let (store, module, id, seq) = (
            self.store.clone(),
            e.module.clone(),
            e.txn_id.clone(),
            e.seq,
        );
        let read = tokio::task::spawn_blocking(move || {
            let txn = store.module(&module, false).ok()?.txn(&id).ok()?;
            let (from, first) = txn.seek(seq);
            let (lines, _) = txn.read_lines(from, txn.committed().len, first).ok()?;
            lines.into_iter().find(|l| l.seq == seq).map(|l| l.text)
        })
        .await
        .ok()
        .flatten();
        let mut line = read.unwrap_or_else(|| {
            serde_json::json!({"event": e.event, "seq": e.seq, "ts": e.ts}).to_string()
        });
        line.push('\n');
        line.into_bytes()
    }

    /// Appends the run's `hook_ran` to the transaction's log.
    async fn record(
        &self,
        job: &Job,
        outcome: &str,
        exit_code: Option<i64>,
        signal: Option<i64>,
        duration_ms: u64,
        reason: String,
    ) {
        let body = Body::HookRan {
            hook: job.hook.to_string(),
            for_seq: job.event.seq,
            for_event: job.event.event.clone(),
            outcome: outcome.to_string(),
            exit_code,
            signal,
            duration_ms,
            reason,
        };
        let (store, module, id) = (
            self.store.clone(),
            job.event.module.clone(),
            job.event.txn_id.clone(),
        );
        let done = tokio::task::spawn_blocking(move || -> crate::core::Result<()> {
            let module = store.module(&module, false)?;
            let txn = module.txn(&id)?;
            let out = txn.mutate(&module.fsm(), &Guards::default(), &None, |_, _| Ok(body))?;
            module.announce(&out);
            Ok(())
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(txn = %job.event.txn_id, hook = job.hook, error = %e, "cannot record a hook's outcome");
        }
    }
}

/// The run's outcome and captured output, to the daemon's log.
fn log_output(job: &Job, ran: &run::Ran) {
    let e = &job.event;
    for (stream, bytes) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(module = %e.module, txn = %e.txn_id, seq = e.seq, hook = job.hook, stream, "{text}");
        }
    }
    tracing::info!(module = %e.module, txn = %e.txn_id, seq = e.seq, hook = job.hook, end = ?ran.end, ms = ran.duration.as_millis() as u64, "hook ran");
}
