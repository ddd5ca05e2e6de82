//! Which shards a host owns as the view changes, and which of those it must not serve
//! yet, pure. A shard this node takes over is served once every other member hosting
//! the kind (up or leaving) has settled on the same members: each has stopped the
//! entities of every shard those members give to another, and said so in gossip, so none
//! still runs an entity of a shard now this node's. Or after a bound. A host that just
//! started takes every shard it owns as taken over, and serves none until its view shows
//! the cluster (it may not have heard of the others yet).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::placement::ShardTable;

/// A host's shards: the table it routes by and the shards it waits to serve.
#[derive(Debug)]
pub(crate) struct Handoff {
    me: String,
    kind: String,
    /// The table this host routes by: the view's, without this node once it leaves.
    current: Option<Arc<ShardTable>>,
    /// Shards taken over, not served yet, and since when.
    awaiting: HashMap<u32, Instant>,
    leaving: bool,
    /// The view's table `current` was last made from.
    seen: Option<Arc<ShardTable>>,
}

impl Handoff {
    pub(crate) fn new(me: &str, kind: &str) -> Self {
        Self {
            me: me.to_owned(),
            kind: kind.to_owned(),
            current: None,
            awaiting: HashMap::new(),
            leaving: false,
            seen: None,
        }
    }

    /// The node leaves: from now on it owns no shard.
    pub(crate) fn leave(&mut self) {
        self.leaving = true;
        if let Some(seen) = self.seen.take() {
            self.follow(seen, Instant::now());
        }
    }

    /// Whether the node leaves.
    pub(crate) fn leaving(&self) -> bool {
        self.leaving
    }

    /// The view's table is `table` now (at `now`); returns whether the owners changed.
    /// Shards this node takes over wait until the others settled on it.
    pub(crate) fn follow(&mut self, table: Arc<ShardTable>, now: Instant) -> bool {
        if self
            .seen
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, &table))
        {
            return false;
        }
        self.seen = Some(table.clone());
        let table = if self.leaving && table.has(&self.me) {
            Arc::new(table.without(&self.kind, &self.me))
        } else {
            table
        };
        if self.current.as_ref().is_some_and(|c| **c == *table) {
            return false;
        }
        let mine = |t: &ShardTable, shard: u32| t.owner(shard) == Some(self.me.as_str());
        self.awaiting.retain(|shard, _| mine(&table, *shard));
        for shard in 0..table.shards() {
            // Started just now: everything it owns is taken over.
            let taken = mine(&table, shard)
                && self
                    .current
                    .as_ref()
                    .is_none_or(|before| !mine(before, shard));
            if taken {
                self.awaiting.entry(shard).or_insert(now);
            }
        }
        self.current = Some(table);
        true
    }

    /// The table this host routes by, once it has seen a view.
    pub(crate) fn table(&self) -> Option<&Arc<ShardTable>> {
        self.current.as_ref()
    }

    /// Whether this node owns `shard` (every shard, before any view: no cluster).
    pub(crate) fn owns(&self, shard: u32) -> bool {
        self.current
            .as_ref()
            .is_none_or(|t| t.owner(shard) == Some(self.me.as_str()))
    }

    /// The digest of the members the current table spreads the shards over.
    pub(crate) fn digest(&self) -> Option<String> {
        self.current.as_ref().map(|t| t.digest())
    }

    /// Whether `shard` (owned here) may be served now: not taken over, or every other
    /// member hosting the kind settled on the current members (`others_settled`) in a
    /// view that shows the cluster (`knows_the_cluster`), or it waited `bound` already.
    /// Once it may, it always may (until it moves again).
    pub(crate) fn ready(
        &mut self,
        shard: u32,
        now: Instant,
        bound: Duration,
        knows_the_cluster: bool,
        others_settled: impl FnOnce(&str) -> bool,
    ) -> bool {
        let Some(since) = self.awaiting.get(&shard) else {
            return true;
        };
        let waited = now.saturating_duration_since(*since) >= bound;
        let ready = waited
            || (knows_the_cluster && self.digest().is_some_and(|digest| others_settled(&digest)));
        if ready {
            // What holds for one shard taken over holds for all of this table's.
            if !waited {
                self.awaiting.clear();
            } else {
                self.awaiting.remove(&shard);
            }
        }
        ready
    }

    /// How many shards wait.
    #[cfg(test)]
    pub(crate) fn awaiting(&self) -> usize {
        self.awaiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(hosts: &[&str]) -> Arc<ShardTable> {
        Arc::new(ShardTable::new(
            "cart",
            64,
            hosts.iter().map(|h| (*h).to_owned()),
        ))
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn a_first_member_serves_everything_once_it_knows_it_is_alone() {
        let mut a = Handoff::new("a", "cart");
        assert!(a.owns(3), "no view: every shard is here");
        let now = Instant::now();
        assert!(a.follow(table(&["a"]), now));
        assert!(!a.follow(table(&["a"]), now), "the same owners");
        assert!(
            !a.ready(3, now, BOUND, false, |_| true),
            "it may have seeds to hear"
        );
        assert!(a.ready(3, now, BOUND, true, |_| true));
    }

    #[test]
    fn a_member_that_joins_waits_until_the_others_settled_on_the_new_members() {
        let now = Instant::now();
        let mut c = Handoff::new("c", "cart");
        c.follow(table(&["c"]), now);
        c.follow(table(&["a", "b", "c"]), now);
        let full = table(&["a", "b", "c"]).digest();
        let old = table(&["a", "b"]).digest();
        let shard = (0..64)
            .find(|s| table(&["a", "b", "c"]).owner(*s) == Some("c"))
            .unwrap();
        assert!(!c.ready(shard, now, BOUND, true, |digest| digest == old));
        assert!(c.ready(shard, now, BOUND, true, |digest| digest == full));
        assert_eq!(c.awaiting(), 0, "all its shards at once");
        assert!(
            c.ready(shard, now, BOUND, true, |_| false),
            "once ready, ready"
        );
    }

    #[test]
    fn the_bound_lets_a_shard_be_served() {
        let now = Instant::now();
        let mut a = Handoff::new("a", "cart");
        a.follow(table(&["a", "b"]), now);
        assert!(!a.ready(3, now, BOUND, true, |_| false));
        let owned = (0..64)
            .find(|s| table(&["a", "b"]).owner(*s) == Some("a"))
            .unwrap();
        assert!(a.ready(owned, now + BOUND, BOUND, true, |_| false));
    }

    #[test]
    fn a_member_that_stays_waits_only_for_the_shards_a_leaver_held() {
        let now = Instant::now();
        let mut a = Handoff::new("a", "cart");
        a.follow(table(&["a"]), now);
        assert!(a.ready(0, now, BOUND, true, |_| true));
        a.follow(table(&["a", "b"]), now);
        assert_eq!(a.awaiting(), 0, "b took shards, a took none");
        a.follow(table(&["a"]), now);
        let from_b = (0..64)
            .filter(|s| table(&["a", "b"]).owner(*s) == Some("b"))
            .count();
        assert_eq!(a.awaiting(), from_b);
    }

    #[test]
    fn a_leaving_member_owns_nothing() {
        let now = Instant::now();
        let mut a = Handoff::new("a", "cart");
        a.follow(table(&["a", "b"]), now);
        a.leave();
        assert!((0..64).all(|s| !a.owns(s)));
        assert_eq!(a.digest(), Some(table(&["b"]).digest()));
        assert!(
            !a.follow(table(&["a", "b"]), now),
            "its own view still shows it: nothing moves back"
        );
    }
}
