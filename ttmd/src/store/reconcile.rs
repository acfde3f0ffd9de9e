//! Changes made to the tree behind the daemon's back (SPEC §8): a
//! transaction directory copied, moved or deleted by hand, lines another
//! program appended to a log, a hand-edited `state.json`.
//!
//! File-system notifications (inotify, through `notify`) are only hints:
//! each one names a path, and the daemon looks at that path and reconciles
//! its own view with what is on disk. The daemon's own writes come back as
//! notifications too and find nothing to do (the log is already counted,
//! `state.json` already matches). When inotify watches run out, the daemon
//! says so and falls back to rescanning the whole tree periodically.
//!
//! Watches are per directory, not recursive: the root, each module
//! directory, each `txns/`, and each transaction directory — never `ctx/`,
//! `build/` or `artifacts/`, which scripts may fill with anything.
//!
//! The same thread runs the checkpoint that syncs `state.json` files
//! replaced without a sync (see `Durability::Fsync`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use super::Store;
use super::fsio::TEMP_PREFIX;
use super::module::{ACTIVE_LINK, Module};
use super::txn::{EVENTS_FILE, STATE_FILE};
use crate::core::id;

/// How often views replaced without a sync are synced.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often the whole tree is rescanned when inotify cannot be used.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The running reconciler; stops when dropped.
#[derive(Debug)]
pub struct Reconciler {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching `store`'s tree on a thread of its own.
pub fn start(store: Arc<Store>) -> Reconciler {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = thread::Builder::new()
        .name("ttmd-reconcile".into())
        .spawn(move || {
            run(&store, &flag);
            // A last checkpoint, so a clean stop leaves every view synced.
            store.checkpoint();
        })
        .map_err(|e| tracing::error!(error = %e, "cannot start the file watcher; hand edits are picked up at restart only"))
        .ok();
    Reconciler { stop, thread }
}

struct Watches {
    watcher: Option<RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    /// inotify is unusable (no watches left, or none at all): rescan.
    rescanning: bool,
}

impl Watches {
    fn add(&mut self, path: &Path) {
        if self.rescanning || self.watched.contains(path) {
            return;
        }
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(path.to_path_buf());
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                tracing::warn!(
                    "inotify watches are exhausted (see fs.inotify.max_user_watches); falling back \
                     to rescanning the tree every {}s",
                    RESCAN_EVERY.as_secs()
                );
                self.rescanning = true;
            }
            // Gone already, or not a directory: nothing to watch.
            Err(_) => {}
        }
    }

    fn forget(&mut self, path: &Path) {
        if self.watched.remove(path)
            && let Some(w) = self.watcher.as_mut()
        {
            let _ = w.unwatch(path);
        }
    }
}

fn run(store: &Store, stop: &AtomicBool) {
    let (tx, rx) = mpsc::channel();
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher = match RecommendedWatcher::new(tx, config) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use inotify; rescanning the tree every {}s instead", RESCAN_EVERY.as_secs());
            None
        }
    };
    let mut w = Watches {
        rescanning: watcher.is_none(),
        watcher,
        watched: HashSet::new(),
    };
    watch_all(store, &mut w);
    let mut settling = Settling::new();
    let mut last_checkpoint = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        load_settled(store, &mut settling);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            store.checkpoint();
            last_checkpoint = std::time::Instant::now();
        }
        let wait = if !settling.is_empty() {
            SETTLE / 3
        } else if w.rescanning {
            RESCAN_EVERY
        } else {
            CHECKPOINT_EVERY / 2
        };
        match rx.recv_timeout(wait) {
            Ok(Ok(first)) => {
                let (paths, lost) = drain(first, &rx);
                for path in &paths {
                    tracing::debug!(path = %path.display(), "file event");
                    handle(store, &mut w, &mut settling, path);
                }
                if lost {
                    tracing::warn!("file watcher lost events; rescanning the tree");
                    rescan(store, &mut w);
                }
            }
            Ok(Err(e)) => {
                // The queue overflowed or similar: events were lost, so
                // look at everything once.
                tracing::warn!(error = %e, "file watcher error; rescanning the tree");
                rescan(store, &mut w);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if w.rescanning {
                    rescan(store, &mut w);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Under load every append is a notification: takes `first` and all that
/// are queued, each path once. Says whether events were lost.
fn drain(
    first: notify::Event,
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
) -> (Vec<PathBuf>, bool) {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut lost = false;
    let mut next = Some(Ok(first));
    while let Some(item) = next {
        match item {
            Ok(event) => {
                let ignored = matches!(
                    event.kind,
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                );
                for path in event.paths {
                    if !ignored && seen.insert(path.clone()) {
                        paths.push(path);
                    }
                }
            }
            Err(_) => lost = true,
        }
        next = if paths.len() < 4096 {
            rx.try_recv().ok()
        } else {
            None
        };
    }
    (paths, lost)
}

/// Adds watches for the whole tree as it is loaded now.
fn watch_all(store: &Store, w: &mut Watches) {
    w.add(&store.root);
    for m in store.modules() {
        if let Some(dir) = m.txns_dir.parent() {
            w.add(dir);
        }
        w.add(&m.txns_dir);
        for id in m.loaded_ids() {
            w.add(&m.txns_dir.join(id));
        }
    }
}

/// Looks at everything: new and removed transactions, foreign log lines,
/// edited state files. Used when inotify is unusable or lost events.
fn rescan(store: &Store, w: &mut Watches) {
    pick_up_modules(store);
    for m in store.modules() {
        let on_disk: HashSet<String> = m.ids_on_disk().into_iter().collect();
        for id in on_disk.iter().filter(|id| !m.knows(id)) {
            m.reconcile_dir(id);
        }
        for id in m.served_ids().iter().filter(|id| !on_disk.contains(*id)) {
            m.reconcile_dir(id);
        }
        for id in m.loaded_ids() {
            if let Ok(t) = m.txn(&id) {
                reconcile_files(&m, &t);
            }
        }
    }
    watch_all(store, w);
}

/// Loads modules that appeared in the root.
fn pick_up_modules(store: &Store) {
    for name in store.module_names_on_disk().unwrap_or_default() {
        let _ = store.module(&name, false);
    }
}

/// Picks up what changed in a loaded transaction's files. A log that
/// changed under what ttmd wrote gets the transaction unloaded, and loaded
/// again (or quarantined) from disk by the next look at the directory.
/// Returns whether it was unloaded.
fn reconcile_files(m: &Module, t: &super::Txn) -> bool {
    if t.log_replaced() {
        m.forget(&t.id);
        return true;
    }
    match t.reconcile_log(&m.fsm()) {
        Ok(changes) => changes.iter().for_each(|o| m.announce(o)),
        Err(_) if t.log_damaged() => {
            m.forget(&t.id);
            return true;
        }
        Err(e) => {
            tracing::warn!(txn = %t.id, error = %e, "cannot pick up lines appended to the log")
        }
    }
    reconcile_view(m, t);
    false
}

/// Takes in a hand edit of `state.json`; watchers hear what it logged.
fn reconcile_view(m: &Module, t: &super::Txn) {
    match t.reconcile_state(&m.fsm()) {
        Ok(logged) => logged.iter().for_each(|o| m.announce(o)),
        Err(e) => tracing::warn!(txn = %t.id, error = %e, "cannot take in the edit of state.json"),
    }
}

/// How long a directory that appeared must stay quiet before it is loaded:
/// `cp -r` creates the directory before its files, and loading a half-copied
/// transaction would quarantine it (or cut a log that is still growing).
pub const SETTLE: Duration = Duration::from_millis(300);

/// Transaction directories that appeared and wait to settle:
/// (module, id) → when something last changed in them.
type Settling = std::collections::HashMap<(String, String), std::time::Instant>;

/// Loads the directories that have been quiet for [`SETTLE`].
fn load_settled(store: &Store, settling: &mut Settling) {
    let now = std::time::Instant::now();
    let ready: Vec<(String, String)> = settling
        .iter()
        .filter(|(_, last)| now.duration_since(**last) >= SETTLE)
        .map(|(k, _)| k.clone())
        .collect();
    for key in ready {
        settling.remove(&key);
        if let Ok(m) = store.module(&key.0, false) {
            m.reconcile_dir(&key.1);
        }
    }
}

/// Watches a module directory and, once it has `txns/`, loads the module
/// and watches everything in it. Listing after each watch is added closes
/// the race with a `txns/` or a transaction created meanwhile.
fn adopt_module(store: &Store, w: &mut Watches, settling: &mut Settling, module: &str) {
    if id::validate_module(module).is_err() {
        return;
    }
    let dir = store.root.join(module);
    w.add(&dir);
    if !dir.join("txns").is_dir() {
        return;
    }
    let Ok(m) = store.module(module, false) else {
        return;
    };
    w.add(&m.txns_dir);
    for id in m.ids_on_disk() {
        if m.is_loaded(&id) {
            w.add(&m.txns_dir.join(&id));
            if let Ok(t) = m.txn(&id)
                && reconcile_files(&m, &t)
            {
                // Changes made before the watch existed.
                settling.insert((module.to_string(), id), std::time::Instant::now());
            }
        } else if !m.knows(&id) {
            w.add(&m.txns_dir.join(&id));
            settling.insert((module.to_string(), id), std::time::Instant::now());
        }
    }
}

/// Reconciles what one notification names.
fn handle(store: &Store, w: &mut Watches, settling: &mut Settling, path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    if name.starts_with(TEMP_PREFIX) {
        return;
    }
    let Some(parent) = path.parent() else {
        return;
    };
    // <root>/<module>, or <root>/<module>/txns: a module may have appeared.
    if parent == store.root {
        adopt_module(store, w, settling, &name);
        return;
    }
    if name == "txns" && parent.parent() == Some(&store.root) {
        if let Some(module) = parent.file_name().map(|n| n.to_string_lossy().into_owned()) {
            adopt_module(store, w, settling, &module);
        }
        return;
    }
    for m in store.modules() {
        // <txns>/<id>: a transaction directory came or went.
        if parent == m.txns_dir {
            txn_dir_changed(&m, w, settling, name);
            return;
        }
        // <txns>/<id>/<file>: a log or state file changed.
        if parent.parent() == Some(m.txns_dir.as_path()) {
            if let Some(id) = parent.file_name().map(|n| n.to_string_lossy().into_owned()) {
                txn_file_changed(&m, settling, id, &name);
            }
            return;
        }
    }
}

/// `<txns>/<name>` appeared or went away.
fn txn_dir_changed(m: &Module, w: &mut Watches, settling: &mut Settling, name: String) {
    if name == ACTIVE_LINK {
        // Never watched through: inotify would fold it into the watch of
        // the directory it points at.
        return;
    }
    let dir = m.txns_dir.join(&name);
    let present = std::fs::symlink_metadata(&dir).is_ok_and(|md| md.is_dir());
    if !present {
        w.forget(&dir);
        settling.remove(&(m.name.clone(), name.clone()));
        m.reconcile_dir(&name);
        return;
    }
    if m.knows(&name) && !m.is_loaded(&name) {
        // Finished and kept as a summary: nothing to look at.
        return;
    }
    w.add(&dir);
    if !m.knows(&name) {
        // New (or quarantined): load it once it has settled.
        settling.insert((m.name.clone(), name), std::time::Instant::now());
    } else if let Ok(t) = m.txn(&name)
        && reconcile_files(m, &t)
    {
        // Loaded before its watch existed (created by ttmd itself): looked
        // once for what changed in between, and its log had.
        settling.insert((m.name.clone(), name), std::time::Instant::now());
    }
}

/// `<txns>/<id>/<name>` changed.
fn txn_file_changed(m: &Module, settling: &mut Settling, id: String, name: &str) {
    if !m.knows(&id) {
        // Still arriving (or quarantined and being fixed): wait for it to
        // settle, then try to load it again.
        settling.insert((m.name.clone(), id), std::time::Instant::now());
        return;
    }
    let Ok(t) = m.txn(&id) else {
        return;
    };
    match name {
        EVENTS_FILE if t.log_replaced() => {
            m.forget(&id);
            settling.insert((m.name.clone(), id), std::time::Instant::now());
        }
        EVENTS_FILE => match t.reconcile_log(&m.fsm()) {
            Ok(changes) => changes.iter().for_each(|o| m.announce(o)),
            Err(_) if t.log_damaged() => {
                m.forget(&id);
                settling.insert((m.name.clone(), id), std::time::Instant::now());
            }
            Err(e) => {
                tracing::warn!(txn = %t.id, error = %e, "cannot pick up lines appended to the log")
            }
        },
        STATE_FILE => reconcile_view(m, &t),
        // ctx/, build/, artifacts/ and the rest are never state.
        _ => {}
    }
}
