//! Start-up's probe of a module's transaction directories, on several
//! threads.

use std::path::Path;

use crate::core::summary::Summary;
use crate::store::txn;

/// A probe's result: the summary and create request id of a finished
/// transaction kept unloaded, or `None` to load it.
pub(super) type Probed = Option<(Summary, Option<String>)>;

/// Threads probing at start-up. The probe is two small reads a
/// transaction, and a tree whose files left the page cache makes start-up
/// wait on the disk one read at a time (the profile at 100,000: 80% in the
/// kernel, mostly waiting for reads); several at once keep the disk busy.
const PROBERS: usize = 8;

/// [`txn::probe_finished`] of each `(name, is a directory)` in `txns_dir`
/// (`None` for a non-directory), on up to [`PROBERS`] threads; in order.
pub(super) fn probe_all(txns_dir: &Path, dirs: &[(String, bool)]) -> Vec<(String, Probed)> {
    let probe = |(name, is_dir): &(String, bool)| {
        let probed = is_dir
            .then(|| txn::probe_finished(&txns_dir.join(name)))
            .flatten();
        (name.clone(), probed)
    };
    let chunk = dirs.len().div_ceil(PROBERS).max(256);
    std::thread::scope(|s| {
        let probe = &probe;
        let running: Vec<_> = dirs
            .chunks(chunk)
            .map(|c| {
                let spawned = std::thread::Builder::new()
                    .name("ttmd-probe".into())
                    .spawn_scoped(s, move || c.iter().map(probe).collect::<Vec<_>>());
                // No thread to be had: this chunk is probed here.
                spawned.map_err(|_| c.iter().map(probe).collect::<Vec<_>>())
            })
            .collect();
        running
            .into_iter()
            .flat_map(|r| match r {
                // The probe does not panic; were it to, that chunk's
                // transactions are loaded when asked for (`Module::txn`).
                Ok(h) => h.join().unwrap_or_default(),
                Err(done) => done,
            })
            .collect()
    })
}
