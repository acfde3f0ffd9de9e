use super::table::{Place, expires_at};
use super::*;

fn key(t: &str) -> TxnKey {
    ("ttm".into(), t.into())
}

fn waiter(t: &str, ticket: u64) -> Waiter {
    Waiter {
        txn: key(t),
        ticket,
        ttl_ms: 1000,
        since: "t0".into(),
    }
}

#[test]
fn names() {
    for good in ["@prod", "db-migrations", "a", "@a_1", &"x".repeat(32)] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    let huge = "a".repeat(1 << 20);
    for bad in [
        "", "@", "../x", "@../prod", "a/b", "a\0b", "@@x", "Prod", "-x", &huge,
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn env_names_and_fences() {
    assert_eq!(fence_env_name("@prod"), "TTM_FENCE_PROD");
    assert_eq!(fence_env_name("db-mig_2"), "TTM_FENCE_DB_MIG_2");
    assert_eq!(parse_fence("@prod=42").unwrap(), ("@prod".into(), 42));
    for bad in ["@prod", "@prod=", "@prod=x", "../a=1", "=3"] {
        assert!(parse_fence(bad).is_err(), "{bad}");
    }
}

#[test]
fn fence_is_current_only_for_the_held_token() {
    let mut l = Leases::default();
    let none: &[(String, u64)] = &[];
    assert!(check_fences("t", &l, none).is_ok());
    let f = |n: &str, t| vec![(n.to_string(), t)];
    assert!(matches!(
        check_fences("t", &l, &f("@prod", 1)),
        Err(crate::Error::Fenced(_))
    ));
    l.held.insert(
        "@prod".into(),
        Held {
            token: 7,
            ttl_ms: 1000,
            since: "t".into(),
        },
    );
    assert!(check_fences("t", &l, &f("@prod", 7)).is_ok());
    for (name, token) in [("@prod", 6), ("@prod", 8), ("@dev", 7)] {
        assert!(check_fences("t", &l, &f(name, token)).is_err());
    }
}

#[test]
fn ttl_bounds() {
    assert_eq!(ttl_or_default(0).unwrap(), DEFAULT_TTL_MS);
    assert_eq!(ttl_or_default(500).unwrap(), 500);
    assert!(ttl_or_default(1).is_err());
    assert!(ttl_or_default(u64::MAX).is_err());
}

#[test]
fn queue_is_fifo_by_ticket_and_grants_only_when_free() {
    let mut t = Table::default();
    // Tickets arrive out of order (a restart re-forms the queue from logs).
    t.enqueue("@prod", waiter("b", 5));
    t.enqueue("@prod", waiter("a", 2));
    t.enqueue("@prod", waiter("c", 9));
    t.enqueue("@prod", waiter("a", 11)); // queued once
    assert_eq!(t.place("@prod", &key("a")), Place::Queued(1));
    assert_eq!(t.place("@prod", &key("c")), Place::Queued(3));
    assert_eq!(t.next_grant("@prod").map(|w| w.ticket), Some(2));
    let h = t.grant("@prod", 12, "ts", 100).unwrap();
    assert_eq!((h.txn, h.token), (key("a"), 12));
    assert_eq!(t.next_grant("@prod"), None, "held: nobody is next");
    assert_eq!(t.grant("@prod", 13, "ts", 100), None);
    assert!(t.is_current("@prod", &key("a"), 12));
    assert!(!t.is_current("@prod", &key("a"), 11));
    assert_eq!(t.place("@prod", &key("b")), Place::Queued(1));
    assert_eq!(t.remove("@prod", &key("a")), Place::Held(12));
    assert_eq!(t.next_grant("@prod").map(|w| w.txn.1.as_str()), Some("b"));
    assert_eq!(t.remove("@prod", &key("c")), Place::Queued(2));
    assert_eq!(t.remove("@prod", &key("zz")), Place::Absent);
}

#[test]
fn expiry_follows_the_last_sign_of_life() {
    let cases: &[(u64, u64, u64, bool)] = &[
        // (life, ttl, now, expired)
        (0, 1000, 999, false),
        (0, 1000, 1000, true),
        (500, 1000, 1499, false),
        (u64::MAX - 1, 1000, u64::MAX - 2, false),
    ];
    for &(life, ttl, now, want) in cases {
        assert_eq!(expires_at(life, ttl) <= now, want, "{life} {ttl} {now}");
    }
    let mut t = Table::default();
    t.enqueue("@a", waiter("x", 1));
    t.enqueue("@b", waiter("y", 1));
    t.grant("@a", 2, "ts", 0);
    t.grant("@b", 2, "ts", 300);
    assert_eq!(t.next_expiry(), Some(1000));
    t.touch(&key("x"), 600);
    assert_eq!(t.next_expiry(), Some(1300));
    assert!(t.expired(1299).is_empty());
    let gone = t.expired(1600);
    assert_eq!(gone.len(), 2);
    t.touch(&key("x"), 100); // an older sign of life never shortens a TTL
    assert_eq!(t.expired(1599).len(), 1);
}

#[test]
fn rebuild_keeps_order_and_one_holder() {
    let held = |token| Leases {
        held: [(
            "@prod".to_string(),
            Held {
                token,
                ttl_ms: 50,
                since: "s".into(),
            },
        )]
        .into(),
        awaited: Default::default(),
    };
    let waits = |ticket| Leases {
        held: Default::default(),
        awaited: [(
            "@prod".to_string(),
            Awaited {
                ticket,
                ttl_ms: 50,
                since: "s".into(),
            },
        )]
        .into(),
    };
    let (t, losers) = Table::rebuild(
        [
            (key("w2"), waits(8)),
            (key("h1"), held(3)),
            (key("w1"), waits(4)),
            (key("h2"), held(6)),
        ],
        1000,
    );
    assert_eq!(t.place("@prod", &key("h2")), Place::Held(6));
    assert_eq!(losers.len(), 1);
    assert_eq!(losers[0].1.txn, key("h1"));
    assert_eq!(t.place("@prod", &key("w1")), Place::Queued(1));
    assert_eq!(t.place("@prod", &key("w2")), Place::Queued(2));
    // TTLs restart from the restart.
    assert_eq!(t.next_expiry(), Some(1050));
}
