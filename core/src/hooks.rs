//! Which hook an event runs (SPEC §15): one table from event type to hook
//! name, so the daemon, the docs and the tests agree. Keyed by the type's
//! name, so event types added later (the time rules' `txn_overdue`,
//! `txn_stalled`, `txn_resumed`) run their hooks without a change here.

use crate::event::{BUILTIN_TYPES, HOOK_RAN};

/// Event type → hook name, for the daemon's own types. A user event (any
/// other valid type) runs [`USER_EVENT_HOOK`].
pub const HOOKS: &[(&str, &str)] = &[
    ("txn_start", "on-start"),
    ("stage_transition", "on-transition"),
    ("state_updated", "on-update"),
    ("evidence_added", "on-evidence"),
    ("tes_resolved", "on-resolve"),
    ("txn_commit", "on-commit"),
    ("txn_fail", "on-fail"),
    ("txn_retry", "on-retry"),
    ("activated", "on-activate"),
    ("stage_migrated", "on-migrate"),
    ("lease_requested", "on-lease-requested"),
    ("lease_acquired", "on-lease-acquired"),
    ("lease_released", "on-lease-released"),
    ("lease_expired", "on-lease-expired"),
    ("txn_overdue", "on-overdue"),
    ("txn_stalled", "on-stalled"),
    ("txn_resumed", "on-resumed"),
];

/// The hook every user event (`ttmctl event TYPE`) runs; the hook reads the
/// type from `TTM_EVENT`.
pub const USER_EVENT_HOOK: &str = "on-event";

/// The hook `event_type` runs, or `None`: a hook's own outcome
/// (`hook_ran`) never runs a hook, nor does a taken-over state
/// (`state_adopted`, written by recovery).
pub fn hook_for(event_type: &str) -> Option<&'static str> {
    if let Some((_, hook)) = HOOKS.iter().find(|(t, _)| *t == event_type) {
        return Some(hook);
    }
    if event_type == HOOK_RAN || BUILTIN_TYPES.contains(&event_type) {
        return None;
    }
    Some(USER_EVENT_HOOK)
}

/// Whether `name` is a hook name the table knows, for a hook set in
/// `ttmd.toml` or a file in `hooks/` that would never run.
pub fn is_hook_name(name: &str) -> bool {
    name == USER_EVENT_HOOK || HOOKS.iter().any(|(_, h)| *h == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_maps_to_its_hook() {
        let table = [
            ("txn_commit", Some("on-commit")),
            ("txn_fail", Some("on-fail")),
            ("stage_transition", Some("on-transition")),
            ("lease_expired", Some("on-lease-expired")),
            ("txn_overdue", Some("on-overdue")),
            ("txn_stalled", Some("on-stalled")),
            ("txn_resumed", Some("on-resumed")),
            ("txn_start", Some("on-start")),
            ("txn_retry", Some("on-retry")),
            ("progress", Some("on-event")),
            ("hook_ran", None),
            ("state_adopted", None),
        ];
        for (event, hook) in table {
            assert_eq!(hook_for(event), hook, "{event}");
        }
    }

    #[test]
    fn every_built_in_type_but_annotations_and_adoption_has_a_hook() {
        for t in BUILTIN_TYPES {
            let none = [HOOK_RAN, "state_adopted"].contains(t);
            assert_eq!(hook_for(t).is_none(), none, "{t}");
        }
        assert!(is_hook_name("on-stalled") && is_hook_name("on-event"));
        assert!(!is_hook_name("on-nothing"));
    }
}
