//! The lease table: for each name, its holder and its FIFO queue. Pure:
//! time is "now" in milliseconds on the daemon's monotonic clock, passed
//! in; nothing here sleeps, reads a clock or writes a file. The daemon
//! writes each decision as an event first, then applies it here.

use std::collections::BTreeMap;

use super::Leases;

/// A transaction, by module and id.
pub type TxnKey = (String, String);

/// Who holds a name, with what token, and since when it last showed life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub txn: TxnKey,
    pub token: u64,
    pub ttl_ms: u64,
    /// RFC 3339 time of the grant.
    pub since: String,
    /// Last sign of life of the holding transaction (monotonic ms).
    pub life_ms: u64,
}

/// A transaction waiting for a name; the ticket orders the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub txn: TxnKey,
    pub ticket: u64,
    pub ttl_ms: u64,
    pub since: String,
}

/// One name: its holder and its queue, in ticket order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub holder: Option<Holder>,
    pub queue: Vec<Waiter>,
}

/// Where a transaction stands for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// It holds the name with this token.
    Held(u64),
    /// It waits; 1 is next.
    Queued(usize),
    /// It neither holds nor waits.
    Absent,
}

/// Every name with a holder or a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    names: BTreeMap<String, Entry>,
}

/// When a holder that last showed life at `life_ms` lapses.
pub fn expires_at(life_ms: u64, ttl_ms: u64) -> u64 {
    life_ms.saturating_add(ttl_ms)
}

impl Table {
    /// The table the transactions' folded leases describe, as after a
    /// restart: every holder's TTL starts again at `now_ms`, queues are
    /// ordered by ticket (the order of the `lease_requested` events). A
    /// name two transactions claim to hold (which only a hand-edited log
    /// can say) keeps the higher token; the others are returned so the
    /// daemon can record that they lost it.
    pub fn rebuild(
        txns: impl IntoIterator<Item = (TxnKey, Leases)>,
        now_ms: u64,
    ) -> (Table, Vec<(String, Holder)>) {
        let mut t = Table::default();
        let mut losers = Vec::new();
        for (txn, leases) in txns {
            for (name, h) in leases.held {
                let new = Holder {
                    txn: txn.clone(),
                    token: h.token,
                    ttl_ms: h.ttl_ms,
                    since: h.since,
                    life_ms: now_ms,
                };
                let e = t.names.entry(name.clone()).or_default();
                match e.holder.take() {
                    Some(old) if old.token > new.token => {
                        e.holder = Some(old);
                        losers.push((name, new));
                    }
                    Some(old) => {
                        e.holder = Some(new);
                        losers.push((name, old));
                    }
                    None => e.holder = Some(new),
                }
            }
            for (name, a) in leases.awaited {
                let w = Waiter {
                    txn: txn.clone(),
                    ticket: a.ticket,
                    ttl_ms: a.ttl_ms,
                    since: a.since,
                };
                t.enqueue(&name, w);
            }
        }
        (t, losers)
    }

    /// The entry of a name, if it has a holder or a queue.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.names.get(name)
    }

    /// All names with a holder or a queue, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.names.iter()
    }

    /// Where `txn` stands for `name`.
    pub fn place(&self, name: &str, txn: &TxnKey) -> Place {
        let Some(e) = self.names.get(name) else {
            return Place::Absent;
        };
        if let Some(h) = &e.holder
            && &h.txn == txn
        {
            return Place::Held(h.token);
        }
        match e.queue.iter().position(|w| &w.txn == txn) {
            Some(i) => Place::Queued(i + 1),
            None => Place::Absent,
        }
    }

    /// Adds a waiter in ticket order (a transaction is queued once).
    pub fn enqueue(&mut self, name: &str, w: Waiter) {
        let e = self.names.entry(name.to_string()).or_default();
        if e.queue.iter().any(|q| q.txn == w.txn) {
            return;
        }
        let at = e.queue.partition_point(|q| q.ticket < w.ticket);
        e.queue.insert(at, w);
    }

    /// Who is to be granted `name` now: the head of its queue, when it has
    /// no holder.
    pub fn next_grant(&self, name: &str) -> Option<&Waiter> {
        let e = self.names.get(name)?;
        match e.holder {
            Some(_) => None,
            None => e.queue.first(),
        }
    }

    /// Makes the head of the queue the holder with `token`. Refused (None)
    /// when the name has a holder or nobody waits.
    pub fn grant(&mut self, name: &str, token: u64, since: &str, now_ms: u64) -> Option<Holder> {
        let e = self.names.get_mut(name)?;
        if e.holder.is_some() || e.queue.is_empty() {
            return None;
        }
        let w = e.queue.remove(0);
        let h = Holder {
            txn: w.txn,
            token,
            ttl_ms: w.ttl_ms,
            since: since.to_string(),
            life_ms: now_ms,
        };
        e.holder = Some(h.clone());
        Some(h)
    }

    /// Takes `txn` off `name`, holder or waiter; returns where it stood.
    pub fn remove(&mut self, name: &str, txn: &TxnKey) -> Place {
        let place = self.place(name, txn);
        if let Some(e) = self.names.get_mut(name) {
            match place {
                Place::Held(_) => e.holder = None,
                Place::Queued(i) => {
                    e.queue.remove(i - 1);
                }
                Place::Absent => {}
            }
            if e.holder.is_none() && e.queue.is_empty() {
                self.names.remove(name);
            }
        }
        place
    }

    /// The names `txn` holds or awaits.
    pub fn names_of(&self, txn: &TxnKey) -> Vec<String> {
        self.names
            .keys()
            .filter(|n| self.place(n, txn) != Place::Absent)
            .cloned()
            .collect()
    }

    /// Renews every lease `txn` holds: it showed life at `now_ms`.
    pub fn touch(&mut self, txn: &TxnKey, now_ms: u64) {
        for e in self.names.values_mut() {
            if let Some(h) = &mut e.holder
                && &h.txn == txn
            {
                h.life_ms = h.life_ms.max(now_ms);
            }
        }
    }

    /// Holders whose TTL has lapsed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> Vec<(String, Holder)> {
        self.names
            .iter()
            .filter_map(|(n, e)| e.holder.as_ref().map(|h| (n, h)))
            .filter(|(_, h)| expires_at(h.life_ms, h.ttl_ms) <= now_ms)
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect()
    }

    /// The earliest moment a holder may lapse: when the timer must fire.
    pub fn next_expiry(&self) -> Option<u64> {
        self.names
            .values()
            .filter_map(|e| e.holder.as_ref())
            .map(|h| expires_at(h.life_ms, h.ttl_ms))
            .min()
    }

    /// Whether `token` is the current one for `name` held by `txn`.
    pub fn is_current(&self, name: &str, txn: &TxnKey, token: u64) -> bool {
        self.place(name, txn) == Place::Held(token)
    }
}
