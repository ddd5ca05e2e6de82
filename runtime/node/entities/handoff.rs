//! Which shards a host owns as the view changes, and which of those it must not serve
//! yet, pure: a shard this node takes over is served once its previous owner has
//! settled on the same members (stopped that shard's entities and said so in gossip), or
//! is no longer there to say it (unreachable, gone), or after a bound. A host that just
//! started takes every shard it owns as taken over from whoever would own it without
//! this node; until its view shows the cluster (another member, or no seeds to wait
//! for), it does not know who that is, and waits.

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
    /// Shards taken over, not served yet: their previous owner (`None`: not known yet),
    /// and since when.
    awaiting: HashMap<u32, (Option<String>, Instant)>,
    leaving: bool,
    /// The view's table `current` was last made from.
    seen: Option<Arc<ShardTable>>,
}

/// What a previous owner looks like in the view, as far as a hand-off goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Previous<'a> {
    /// Up or leaving, with the digest its host settled on (if it did).
    There { settled: Option<&'a str> },
    /// Unreachable, or no longer in the view: it cannot hand anything over.
    Gone,
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
    /// Shards this node takes over wait for their previous owner.
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
        let shards = table.shards();
        let without_me = table.without(&self.kind, &self.me);
        let previous_of = |shard: u32, before: &ShardTable| {
            before
                .owner(shard)
                .filter(|owner| *owner != self.me)
                .map(str::to_owned)
        };
        self.awaiting
            .retain(|shard, _| table.owner(*shard) == Some(self.me.as_str()));
        // Who they are becomes known as the view fills in.
        for (shard, (previous, _)) in &mut self.awaiting {
            if previous.is_none() {
                *previous = previous_of(*shard, &without_me);
            }
        }
        for shard in 0..shards {
            if table.owner(shard) != Some(self.me.as_str()) || self.awaiting.contains_key(&shard) {
                continue;
            }
            let previous = match &self.current {
                // Started just now: everything it owns is taken over.
                None => previous_of(shard, &without_me),
                Some(before) if before.owner(shard) == Some(self.me.as_str()) => continue,
                Some(before) => {
                    previous_of(shard, before).or_else(|| previous_of(shard, &without_me))
                }
            };
            self.awaiting.insert(shard, (previous, now));
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

    /// Whether `shard` (owned here) may be served now: not taken over, or its previous
    /// owner (as `previous` tells) settled on the current members or is gone, or none is
    /// known and the view `knows_the_cluster`, or it waited `bound` already. Once it may,
    /// it always may (until it moves again).
    pub(crate) fn ready<'a>(
        &mut self,
        shard: u32,
        now: Instant,
        bound: Duration,
        knows_the_cluster: bool,
        previous: impl FnOnce(&str) -> Previous<'a>,
    ) -> bool {
        let Some((owner, since)) = self.awaiting.get(&shard) else {
            return true;
        };
        let digest = self.digest();
        let ready = match owner.as_deref().map(previous) {
            None => knows_the_cluster,
            Some(Previous::Gone) => true,
            Some(Previous::There { settled }) => settled.is_some() && settled == digest.as_deref(),
        } || now.saturating_duration_since(*since) >= bound;
        if ready {
            self.awaiting.remove(&shard);
        }
        ready
    }

    /// The shards waiting for their previous owner, with it.
    #[cfg(test)]
    pub(crate) fn awaiting(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.awaiting
            .iter()
            .map(|(shard, (owner, _))| (*shard, owner.as_deref().unwrap_or("?")))
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
            !a.ready(3, now, BOUND, false, |_| Previous::Gone),
            "it may have seeds to hear"
        );
        assert!(a.ready(3, now, BOUND, true, |_| Previous::Gone));
    }

    #[test]
    fn a_member_whose_first_view_shows_only_itself_waits_for_the_owners_it_learns_of() {
        let now = Instant::now();
        let mut c = Handoff::new("c", "cart");
        c.follow(table(&["c"]), now);
        c.follow(table(&["a", "b", "c"]), now);
        let full = table(&["a", "b", "c"]);
        for shard in (0..64).filter(|s| full.owner(*s) == Some("c")) {
            let expected = full.without("cart", "c").owner(shard).map(str::to_owned);
            let known: Vec<(u32, String)> = c.awaiting().map(|(s, o)| (s, o.to_owned())).collect();
            assert!(
                known.contains(&(shard, expected.clone().unwrap())),
                "{shard}: {known:?}"
            );
            assert!(!c.ready(shard, now, BOUND, true, |_| Previous::There {
                settled: None
            }));
        }
    }

    #[test]
    fn a_member_that_joins_waits_for_each_previous_owner_to_settle_on_the_new_members() {
        let now = Instant::now();
        let mut c = Handoff::new("c", "cart");
        c.follow(table(&["a", "b", "c"]), now);
        let taken: Vec<(u32, String)> = c.awaiting().map(|(s, o)| (s, o.to_owned())).collect();
        assert!(!taken.is_empty());
        let digest = table(&["a", "b", "c"]).digest();
        let old = table(&["a", "b"]).digest();
        for (shard, owner) in taken {
            assert_eq!(table(&["a", "b"]).owner(shard), Some(owner.as_str()));
            assert!(!c.ready(shard, now, BOUND, true, |_| Previous::There {
                settled: Some(&old)
            }));
            assert!(!c.ready(shard, now, BOUND, true, |_| Previous::There {
                settled: None
            }));
            assert!(c.ready(shard, now, BOUND, true, |_| Previous::There {
                settled: Some(&digest)
            }));
            assert!(
                c.ready(shard, now, BOUND, true, |_| Previous::There {
                    settled: None
                }),
                "once ready, ready"
            );
        }
    }

    #[test]
    fn a_dead_previous_owner_or_the_bound_lets_a_shard_be_served() {
        let now = Instant::now();
        let mut a = Handoff::new("a", "cart");
        a.follow(table(&["a", "b"]), now);
        let mut shards = a.awaiting().map(|(s, _)| s).collect::<Vec<_>>().into_iter();
        let (first, second) = (shards.next().unwrap(), shards.next().unwrap());
        assert!(a.ready(first, now, BOUND, true, |_| Previous::Gone));
        assert!(!a.ready(second, now, BOUND, true, |_| Previous::There {
            settled: None
        }));
        assert!(
            a.ready(second, now + BOUND, BOUND, true, |_| Previous::There {
                settled: None
            })
        );
    }

    #[test]
    fn a_member_that_stays_waits_only_for_the_shards_a_leaver_held() {
        let now = Instant::now();
        let mut a = Handoff::new("a", "cart");
        a.follow(table(&["a"]), now);
        for shard in 0..64 {
            assert!(a.ready(shard, now, BOUND, true, |_| Previous::Gone));
        }
        a.follow(table(&["a", "b"]), now);
        assert_eq!(a.awaiting().count(), 0, "b took shards, a took none");
        a.follow(table(&["a"]), now);
        let from_b: Vec<u32> = a
            .awaiting()
            .map(|(s, o)| {
                assert_eq!(o, "b");
                s
            })
            .collect();
        assert_eq!(
            from_b.len(),
            (0..64)
                .filter(|s| table(&["a", "b"]).owner(*s) == Some("b"))
                .count()
        );
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
