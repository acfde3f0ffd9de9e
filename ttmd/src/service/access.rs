//! Who may call (SPEC §8): the daemon's own uid, root only if configured
//! (or if the daemon is root), and the uids and groups of the config. The
//! peer's credentials come from the socket, so they cannot be forged.

use crate::config::Access;

/// Whether a peer with `uid`/`gid` (and process `pid`, for supplementary
/// groups) may call a daemon running as `own_uid`.
pub fn allowed(own_uid: u32, access: &Access, uid: u32, gid: u32, pid: Option<i32>) -> bool {
    if uid == own_uid || access.uids.contains(&uid) {
        return true;
    }
    if uid == 0 {
        return access.allow_root;
    }
    if access.gids.is_empty() {
        return false;
    }
    access.gids.contains(&gid)
        || pid.is_some_and(|p| {
            supplementary_groups(p)
                .iter()
                .any(|g| access.gids.contains(g))
        })
}

/// The supplementary groups of process `pid`, from `/proc/<pid>/status`
/// (SO_PEERCRED carries only the primary gid). Empty if unreadable.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_gets_in() {
        let none = Access::default();
        assert!(allowed(1000, &none, 1000, 1000, None));
        assert!(!allowed(1000, &none, 1001, 1000, None));
        assert!(!allowed(1000, &none, 0, 0, None), "root only if configured");
        assert!(allowed(0, &none, 0, 0, None), "a root daemon serves root");
        let some = Access {
            uids: vec![1001],
            gids: vec![50],
            allow_root: true,
            ..Default::default()
        };
        assert!(allowed(1000, &some, 1001, 9, None));
        assert!(allowed(1000, &some, 1002, 50, None));
        assert!(!allowed(1000, &some, 1003, 9, None));
        assert!(allowed(1000, &some, 0, 0, None));
        let me = std::process::id() as i32;
        let my_groups = supplementary_groups(me);
        if let Some(&g) = my_groups.first() {
            let by_group = Access {
                gids: vec![g],
                ..Default::default()
            };
            assert!(allowed(1000, &by_group, 4242, 4242, Some(me)));
        }
    }
}
