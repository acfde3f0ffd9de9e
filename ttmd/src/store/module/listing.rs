//! One page of a module's listing. `List` answers a page at a time; a page
//! walks the module's kept order (`order.rs`) from its token and clones
//! only its own rows, so listing 100,000 transactions costs one walk, not
//! one per page.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::order::Order;
use super::{Listed, Module, read, write};
use crate::core::summary::Summary;
use crate::store::txn::Txn;

impl Module {
    /// The module's transactions (only those in `stage`, if given), oldest
    /// first by (created, id).
    pub fn list(&self, stage: Option<&str>) -> Vec<Listed> {
        self.list_after(stage, None, usize::MAX)
    }

    /// The first `limit` rows of [`Module::list`] that sort after `after`
    /// (a (created, id) key), walking only those rows (and, with `stage`,
    /// the rows of other stages between them).
    pub fn list_after(
        &self,
        stage: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<Listed> {
        let txns = read(&self.txns);
        let finished = read(&self.finished);
        if let Some(rows) = page(&read(&self.order), &txns, &finished, stage, after, limit) {
            return rows;
        }
        // The kept order disagrees with what is served: a bug, not a state
        // of the tree. Rebuilt from the served transactions, the listing is
        // right whatever went wrong.
        tracing::error!(module = %self.name, "listing order out of step; rebuilt it");
        let mut order = write(&self.order);
        rebuild(&mut order, &txns, &finished);
        page(&order, &txns, &finished, stage, after, limit).unwrap_or_default()
    }
}

/// The page, or `None` if `order` does not hold exactly the served ids
/// with their current keys.
fn page(
    order: &Order,
    txns: &BTreeMap<String, Arc<Txn>>,
    finished: &BTreeMap<Box<str>, Summary>,
    stage: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Option<Vec<Listed>> {
    if order.len() != txns.len() + finished.len() {
        return None;
    }
    let mut rows = Vec::new();
    for (created, id) in order.after(after) {
        if rows.len() >= limit {
            break;
        }
        let (summary, txn) = match (txns.get(id), finished.get(id)) {
            (Some(t), _) => (Summary::of(&t.state()), Some(t)),
            (None, Some(s)) => (s.clone(), None),
            (None, None) => return None,
        };
        if summary.created() != created {
            return None;
        }
        if stage.is_none_or(|st| summary.stage() == st) {
            rows.push(Listed {
                id: id.to_string(),
                summary,
                txn: txn.cloned(),
            });
        }
    }
    Some(rows)
}

/// Refills `order` from the served transactions.
fn rebuild(
    order: &mut Order,
    txns: &BTreeMap<String, Arc<Txn>>,
    finished: &BTreeMap<Box<str>, Summary>,
) {
    order.clear();
    for (id, t) in txns {
        order.insert(&t.state().created, id);
    }
    for (id, s) in finished {
        order.insert(s.created(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::module::NewTxn;
    use crate::store::{Durability, Store};

    fn ids(m: &Module) -> Vec<String> {
        m.list(None).into_iter().map(|l| l.id).collect()
    }

    #[test]
    fn an_order_out_of_step_is_rebuilt_before_a_page_is_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), Durability::None, Default::default()).unwrap();
        let m = store.module("ttm", true).unwrap();
        let new = NewTxn {
            time: Default::default(),
            description: "listed".into(),
            target: "@local".into(),
            agent: "human".into(),
            activate: false,
            request_id: None,
        };
        let made: Vec<String> = (0..4)
            .map(|_| m.create(&new, &None).unwrap().id.clone())
            .collect();
        assert_eq!(ids(&m), made, "creation order");
        let gone = m.unload(&made[1]).unwrap();
        let kept = vec![made[0].clone(), made[2].clone(), made[3].clone()];
        assert_eq!(ids(&m), kept, "unloaded");

        // Forgotten keys, a key of an id no longer served, a key whose
        // created is wrong: each is noticed and the order rebuilt.
        write(&m.order).clear();
        assert_eq!(ids(&m), kept, "no keys");
        write(&m.order).remove(&gone.state().created, &made[2]);
        write(&m.order).insert(&gone.state().created, &made[1]);
        assert_eq!(ids(&m), kept, "a stale key");
        write(&m.order).remove(&gone.state().created, &made[3]);
        write(&m.order).insert("1999-01-01T00:00:00.000Z", &made[3]);
        assert_eq!(ids(&m), kept, "a wrong created");
        let after = m.list_after(None, Some((&gone.state().created, &made[0])), 1);
        assert_eq!(after.len(), 1);
        assert_eq!(read(&m.order).len(), 3);
    }
}
