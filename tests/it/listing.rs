//! The listing's kept order (ttmd/src/store/module/order.rs): after every
//! kind of change — create, transition, commit, fail, loading a finished
//! one, archive, gc, directories copied in or removed by hand — the
//! listing, whole or in small pages, equals what a fresh daemon lists on
//! the same tree.

use std::time::Duration;

use ttm_tests::{Daemon, copy_dir, paged_ids, wait_until};

/// Hang guard of a wait for the daemon to notice a hand edit: far beyond
/// the ~1 s it needs, so hitting it means "never happened".
const GUARD: Duration = Duration::from_secs(20);

/// What a listing shows of each row, in its order: the whole listing
/// (`ttmctl --json list`) and the brief table's ids (`ttmctl list`).
fn listing(d: &Daemon) -> (Vec<String>, Vec<String>) {
    let json = d.ctl(&["--json", "list"]).json();
    let rows = json["txns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let active = t["txn_id"] == json["active"];
            format!(
                "{} {} {} seq {} active {active}",
                t["txn_id"], t["stage"], t["created"], t["seq"]
            )
        })
        .collect();
    // "* ID  STAGE ...", after a header row.
    let table = d
        .ctl(&["list"])
        .ok()
        .lines()
        .skip(1)
        .filter_map(|l| l.get(2..)?.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    (rows, table)
}

/// The ids of the listing, in order.
fn ids_of(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|r| r.split(' ').next().unwrap().trim_matches('"').to_owned())
        .collect()
}

/// Pages of 1 and 2, and of the DONE stage, agree with the whole listing.
async fn pages_agree(d: &Daemon, what: &str) -> Vec<String> {
    let (rows, table) = listing(d);
    let ids = ids_of(&rows);
    assert_eq!(table, ids, "{what}: the table's rows");
    for size in [1, 2] {
        assert_eq!(
            paged_ids(&d.socket, "", size).await,
            ids,
            "{what}: pages of {size}"
        );
    }
    let done: Vec<String> = rows
        .iter()
        .filter(|r| r.contains("\"DONE\""))
        .map(|r| ids_of(std::slice::from_ref(r)).remove(0))
        .collect();
    assert_eq!(
        paged_ids(&d.socket, "DONE", 1).await,
        done,
        "{what}: DONE pages"
    );
    rows
}

/// The listing now equals a fresh daemon's on the same tree.
async fn same_as_fresh(d: &mut Daemon, what: &str) {
    let rows = pages_agree(d, what).await;
    d.restart();
    assert_eq!(listing(d).0, rows, "{what}: a fresh daemon's listing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_stays_in_order_across_every_change_and_a_restart() {
    let mut d = Daemon::start_new();
    let mut made = Vec::new();
    for i in 0..6 {
        let id = d.create(&format!("listed {i}"));
        match i % 3 {
            0 => d.ctl(&["commit", "-t", &id]).ok(),
            1 => d.ctl(&["transition", "EXECUTE", "-t", &id]).ok(),
            _ => d.ctl(&["fail", "boom", "-t", &id]).ok(),
        };
        made.push(id);
    }
    pages_agree(&d, "after creates, transitions, commits, fails").await;
    // The checkpoint lets go of finished transactions (kept as summaries)
    // and a read loads one back: neither moves a row.
    std::thread::sleep(Duration::from_millis(2500));
    pages_agree(&d, "after the checkpoint").await;
    d.ctl(&["status", "-t", &made[0]]).ok();
    same_as_fresh(&mut d, "after loading a finished one").await;

    // After a restart every finished one is a summary: load one, archive.
    d.ctl(&["status", "-t", &made[3]]).ok();
    d.ctl(&["--json", "archive", "--stage", "FAIL", "--yes"])
        .ok();
    same_as_fresh(&mut d, "after archive").await;

    // By hand: an archived one copied back in, a finished one removed.
    let txns = d.root.join("ttm/txns");
    copy_dir(
        &d.root.join("ttm/archive").join(&made[2]),
        &txns.join(&made[2]),
    );
    std::fs::remove_dir_all(txns.join(&made[0])).unwrap();
    let noticed = wait_until(GUARD, || {
        let ids = ids_of(&listing(&d).0);
        ids.contains(&made[2]) && !ids.contains(&made[0])
    });
    assert!(noticed, "hand edits never listed:\n{}", d.daemon_stderr());
    same_as_fresh(&mut d, "after hand edits").await;

    // gc deletes archived ones only; then a new one goes last.
    d.ctl(&["gc", "--yes"]).ok();
    let last = d.create("the newest");
    let rows = pages_agree(&d, "after gc and a create").await;
    assert_eq!(ids_of(&rows).last(), Some(&last));
    same_as_fresh(&mut d, "at the end").await;
}
