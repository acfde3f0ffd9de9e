//! One page of a module's listing. `List` answers a page at a time; when
//! each page built the whole sorted listing (a clone of every summary),
//! listing 100,000 transactions in pages of 500 cost 200 full listings. A
//! page now sorts references and clones only its own rows.

use std::sync::Arc;

use super::{Listed, Module, read};
use crate::core::summary::Summary;
use crate::store::txn::Txn;

/// A candidate row, borrowed: (created, id, summary, loaded transaction).
type Row<'a> = (&'a str, &'a str, &'a Summary, Option<&'a Arc<Txn>>);

impl Module {
    /// The module's transactions (only those in `stage`, if given), oldest
    /// first by (created, id).
    pub fn list(&self, stage: Option<&str>) -> Vec<Listed> {
        self.list_after(stage, None, usize::MAX)
    }

    /// The first `limit` rows of [`Module::list`] that sort after `after`
    /// (a (created, id) key), without cloning or sorting the others.
    pub fn list_after(
        &self,
        stage: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<Listed> {
        let txns = read(&self.txns);
        let finished = read(&self.finished);
        let live: Vec<(Summary, &Arc<Txn>)> = txns
            .values()
            .map(|t| (Summary::of(&t.state()), t))
            .collect();
        let wanted = |s: &Summary, id: &str| {
            stage.is_none_or(|st| s.stage() == st) && after.is_none_or(|a| (s.created(), id) > a)
        };
        let mut rows: Vec<Row> = live
            .iter()
            .filter(|(s, t)| wanted(s, &t.id))
            .map(|(s, t)| (s.created(), t.id.as_str(), s, Some(*t)))
            .chain(
                finished
                    .iter()
                    .filter(|(id, s)| wanted(s, id))
                    .map(|(id, s)| (s.created(), &**id, s, None)),
            )
            .collect();
        let order = |a: &Row, b: &Row| (a.0, a.1).cmp(&(b.0, b.1));
        if rows.len() > limit {
            rows.select_nth_unstable_by(limit, order);
            rows.truncate(limit);
        }
        rows.sort_unstable_by(order);
        rows.into_iter()
            .map(|(_, id, summary, txn)| Listed {
                id: id.to_string(),
                summary: summary.clone(),
                txn: txn.cloned(),
            })
            .collect()
    }
}
