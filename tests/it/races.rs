//! Compare-and-set (SPEC §4): scripts racing on one transaction with
//! `--expect-stage` / `--expect-seq` — exactly one wins, every loser exits 5
//! naming the expected and the actual value, and a loser writes nothing.

use ttm_tests::{Daemon, HANG, Out, Spawned, assert_same_tree, check_log, read_json};

/// Starts `ttmctl args…` once per entry of `args`, all before waiting for
/// any, then waits for all.
fn race(d: &Daemon, args: &[Vec<String>]) -> Vec<Out> {
    let racers: Vec<Spawned> = args
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            d.spawn_ctl(&a)
        })
        .collect();
    racers.into_iter().map(|r| r.wait(HANG)).collect()
}

/// Splits racers' results into the one winner and the losers, asserting
/// that there is exactly one winner and the losers all exited 5.
#[track_caller]
fn one_winner(outs: Vec<Out>, round: &str) -> (Out, Vec<Out>) {
    let (winners, losers): (Vec<Out>, Vec<Out>) = outs.into_iter().partition(|o| o.code() == 0);
    assert_eq!(
        winners.len(),
        1,
        "{round}: {} winners: {winners:?} {losers:?}",
        winners.len()
    );
    for loser in &losers {
        loser.expect_code(5);
    }
    (winners.into_iter().next().unwrap(), losers)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn two_scripts_racing_a_transition_have_one_winner_per_round() {
    const ROUNDS: usize = 50;
    let d = Daemon::start_new();
    for round in 0..ROUNDS {
        let id = d.create(&format!("race {round}"));
        d.ctl(&["transition", "ASSEMBLE", "-t", &id]).ok();
        let racer = strings(&[
            "transition",
            "EXECUTE",
            "--expect-stage",
            "ASSEMBLE",
            "-t",
            &id,
        ]);
        let outs = race(&d, &[racer.clone(), racer]);
        let (_, losers) = one_winner(outs, &format!("round {round}"));
        // Expected and actual stage named.
        losers[0].stderr_has(&["ASSEMBLE", "EXECUTE"]);
        let events = check_log(&d.txn_dir("ttm", &id));
        let to_execute = events
            .iter()
            .filter(|e| e["event"] == "stage_transition" && e["to"] == "EXECUTE")
            .count();
        assert_eq!(to_execute, 1, "round {round}: transitions to EXECUTE");
        assert_eq!(
            events.len(),
            4,
            "round {round}: txn_start, activated, 2 moves"
        );
    }
}

#[test]
fn six_racers_have_exactly_one_winner() {
    const CLIENTS: usize = 6;
    let d = Daemon::start_new();
    let id = d.create("race");
    let racers: Vec<Vec<String>> = (0..CLIENTS)
        .map(|_| strings(&["transition", "SELECT", "--expect-stage", "NEW", "-t", &id]))
        .collect();
    let (_, losers) = one_winner(race(&d, &racers), "six racers");
    assert_eq!(losers.len(), CLIENTS - 1);
    for loser in &losers {
        loser.stderr_has(&["NEW", "SELECT"]);
    }
    let events = check_log(&d.txn_dir("ttm", &id));
    assert_eq!(events.len(), 3, "exactly one stage_transition");
}

#[test]
fn expect_seq_admits_one_of_two_writers_and_a_stale_seq_writes_nothing() {
    const ROUNDS: usize = 20;
    let d = Daemon::start_new();
    let id = d.create("seq guard");
    let dir = d.txn_dir("ttm", &id);
    let seq = || read_json(&dir.join("state.json"))["seq"].as_u64().unwrap();

    for round in 0..ROUNDS {
        let at = seq().to_string();
        let racers: Vec<Vec<String>> = (0..2)
            .map(|k| {
                strings(&[
                    "event",
                    "step",
                    &format!(r#"{{"round":{round},"k":{k}}}"#),
                    "--expect-seq",
                    &at,
                    "--json",
                ])
            })
            .collect();
        let (winner, losers) = one_winner(race(&d, &racers), &format!("round {round}"));
        let next = at.parse::<u64>().unwrap() + 1;
        assert_eq!(
            winner.json()["seq"],
            next,
            "round {round}: the winner's seq"
        );
        losers[0].stderr_has(&[&format!("seq {at}"), &format!("seq {next}")]);
    }
    let events = check_log(&dir);
    assert_eq!(events.len(), 2 + ROUNDS, "one step per round");

    // A stale seq: exit 5, the tree untouched.
    let before = d.snapshot();
    d.ctl(&["event", "late", "{}", "--expect-seq", "2"])
        .expect_code(5)
        .stderr_has(&["seq 2"]);
    d.ctl(&["transition", "SELECT", "--expect-seq", "2"])
        .expect_code(5);
    assert_same_tree(&before, &d.snapshot(), "a stale --expect-seq");

    // The right seq: it goes through.
    let now = seq();
    let out = d.ctl(&[
        "event",
        "ok",
        "{}",
        "--expect-seq",
        &now.to_string(),
        "--json",
    ]);
    assert_eq!(out.json()["seq"], now + 1);
    d.ctl(&[
        "transition",
        "SELECT",
        "--expect-seq",
        &(now + 1).to_string(),
    ])
    .ok();
    assert_eq!(check_log(&dir).len() as u64, now + 2);
}
