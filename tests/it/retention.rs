//! Retention: `archive` moves finished, inactive transactions into
//! `<module>/archive/`; `gc` deletes archived ones past a limit. Both are
//! dry runs unless `--yes`; active and live transactions are never touched.

use ttm_tests::{Daemon, snapshot};

fn ids(out: &serde_json::Value) -> Vec<String> {
    out["txn_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn archive_moves_only_finished_inactive_transactions() {
    let d = Daemon::start_new();
    let done = d.create("done one");
    d.ctl(&["commit"]).ok();
    let failed = d.create("failed one");
    d.ctl(&["fail", "boom"]).ok();
    let live = d.create("still running");
    d.ctl(&["transition", "EXECUTE"]).ok();
    let active_done = d.create("active but done");
    d.ctl(&["commit"]).ok();
    let watch = d.spawn_ctl(&["watch", "--json"]);

    // Dry run: counts, changes nothing.
    let before = d.snapshot();
    let dry = d.ctl(&["--json", "archive"]).json();
    assert_eq!(dry["applied"], false);
    let mut want = vec![done.clone(), failed.clone()];
    want.sort();
    let mut got = ids(&dry);
    got.sort();
    assert_eq!(got, want, "only finished, inactive ones");
    assert_eq!(before, d.snapshot(), "a dry run changes nothing");
    let human = d.ctl(&["archive"]).ok();
    assert!(
        human.contains("would archive 2") && human.contains("--yes"),
        "{human}"
    );

    // A stage filter, an age filter.
    assert_eq!(
        ids(&d.ctl(&["--json", "archive", "--stage", "FAIL"]).json()),
        vec![failed.clone()]
    );
    assert!(ids(&d.ctl(&["--json", "archive", "--older-than", "1d"]).json()).is_empty());
    d.ctl(&["archive", "--stage", "NEW"]).expect_code(2);

    let done_json = d.ctl(&["--json", "archive", "--yes"]).json();
    assert_eq!(done_json["applied"], true);
    let archive = d.root.join("ttm/archive");
    for id in [&done, &failed] {
        assert!(
            archive.join(id).join("events.ndjson").is_file(),
            "{id} archived whole"
        );
        assert!(!d.txn_dir("ttm", id).exists());
        d.ctl(&["state", "-t", id]).expect_code(3);
    }
    for id in [&live, &active_done] {
        assert!(d.txn_dir("ttm", id).is_dir(), "{id} must stay");
    }
    assert_eq!(d.ctl(&["active"]).ok(), active_done);
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list["txns"].as_array().unwrap().len(), 2);
    let mut archived_seen = 0;
    while archived_seen < 2 {
        let line = watch.json_line(std::time::Duration::from_secs(20));
        if line["kind"] == "archived" {
            archived_seen += 1;
        }
    }

    // gc: dry run first, then keep the newest one, then all.
    let before = snapshot(&archive);
    let dry = d.ctl(&["--json", "gc"]).json();
    assert_eq!(ids(&dry).len(), 2);
    assert_eq!(before, snapshot(&archive), "a dry run deletes nothing");
    let kept = d.ctl(&["--json", "gc", "--keep", "1", "--yes"]).json();
    assert_eq!(ids(&kept).len(), 1);
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 1);
    assert!(
        ids(&d
            .ctl(&["--json", "gc", "--older-than", "1d", "--yes"])
            .json())
        .is_empty()
    );
    d.ctl(&["gc", "--yes"]).ok();
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 0);
    // Live transactions were never touched.
    assert!(d.txn_dir("ttm", &live).is_dir());
}
