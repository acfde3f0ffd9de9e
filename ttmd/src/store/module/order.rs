//! The listing's order, kept: every served transaction's (created, id)
//! key, sorted. A `List` page used to walk all served summaries to find the
//! rows past its token (O(n) a page, O(n²/page) for a whole listing); with
//! the keys kept sorted a page walks only its own rows.
//!
//! A key is `created`, NUL, `id` packed in one string: one allocation per
//! transaction, and the packed strings sort as the (created, id) pairs do
//! (NUL sorts before every other character, and neither part holds one:
//! ids are validated, timestamps are written by ttmd).
//!
//! `created` never changes once a transaction exists, so only adding and
//! removing a served transaction touches the order (loading, letting go,
//! unloading, a load that fails); transitions, appends and commits do not.

use std::collections::BTreeSet;
use std::ops::Bound;

/// The sorted keys of a module's served transactions.
#[derive(Debug, Default)]
pub struct Order {
    keys: BTreeSet<Box<str>>,
}

/// The packed key of (created, id).
pub fn key(created: &str, id: &str) -> Box<str> {
    let mut k = String::with_capacity(created.len() + 1 + id.len());
    k.push_str(created);
    k.push('\0');
    k.push_str(id);
    k.into_boxed_str()
}

/// The (created, id) a packed key holds.
pub fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('\0').unwrap_or(("", key))
}

impl Order {
    /// Adds (created, id); already there is no change.
    pub fn insert(&mut self, created: &str, id: &str) {
        self.keys.insert(key(created, id));
    }

    /// Removes (created, id), if there.
    pub fn remove(&mut self, created: &str, id: &str) {
        self.keys.remove(&*key(created, id));
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Forgets every key (before a rebuild).
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// The (created, id) keys that sort after `after` (all, for `None`),
    /// in order.
    pub fn after<'a>(
        &'a self,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let start = match after {
            Some((created, id)) => Bound::Excluded(key(created, id)),
            None => Bound::Unbounded,
        };
        self.keys
            .range::<Box<str>, _>((start, Bound::Unbounded))
            .map(|k| split(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(o: &Order, after: Option<(&str, &str)>) -> Vec<String> {
        o.after(after).map(|(_, id)| id.to_string()).collect()
    }

    #[test]
    fn keys_sort_as_created_then_id() {
        let mut o = Order::default();
        o.insert("2026-01-02T00:00:00.000Z", "a");
        o.insert("2026-01-01T00:00:00.000Z", "z");
        o.insert("2026-01-01T00:00:00.000Z", "b");
        // A shorter created sorts before a longer one it prefixes, as the
        // pair does.
        o.insert("2026-01-01", "y");
        assert_eq!(ids(&o, None), ["y", "b", "z", "a"]);
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn after_starts_past_the_token_whether_or_not_it_is_kept() {
        let mut o = Order::default();
        for (c, id) in [("t1", "a"), ("t1", "c"), ("t2", "b")] {
            o.insert(c, id);
        }
        assert_eq!(ids(&o, Some(("t1", "a"))), ["c", "b"]);
        // A token whose row went away meanwhile still says where to go on.
        assert_eq!(ids(&o, Some(("t1", "b"))), ["c", "b"]);
        assert_eq!(ids(&o, Some(("t2", "b"))), Vec::<String>::new());
        assert_eq!(ids(&o, Some(("t0", "zzz"))), ["a", "c", "b"]);
    }

    #[test]
    fn insert_is_idempotent_and_remove_forgets() {
        let mut o = Order::default();
        o.insert("t", "a");
        o.insert("t", "a");
        assert_eq!(o.len(), 1);
        o.remove("t", "b");
        o.remove("u", "a");
        assert_eq!(o.len(), 1);
        o.remove("t", "a");
        assert_eq!(o.len(), 0);
        o.insert("t", "a");
        o.clear();
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn split_gives_back_the_parts() {
        assert_eq!(
            split(&key("2026-01-01T00:00:00Z", "x-1")),
            ("2026-01-01T00:00:00Z", "x-1")
        );
        assert_eq!(split(&key("", "x")), ("", "x"));
    }
}
