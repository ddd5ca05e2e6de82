//! A host's claims on its shards, for a kind that keeps state: which shards it may serve
//! now, under which epoch, until when (with leases), and which claims are on their way.
//! Pure bookkeeping on the host's clock; the host asks the store and tells this what it
//! answered.
//!
//! A claim's local deadline is taken from when its request was **sent**, less a margin:
//! the store dated the lease no earlier, so the node stops serving before the store lets
//! another node take the shard (clocks that run at the same rate assumed, not set alike).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{Claim, StateStore};

/// What a host of a kind that keeps state needs to claim shards.
#[derive(Clone, Debug)]
pub(crate) struct ClaimsArgs {
    pub(crate) store: Arc<StateStore>,
    /// The lease's length, when leases are on.
    pub(crate) lease: Option<Duration>,
    /// This node in the store: `NAME/INCARNATION`.
    pub(crate) owner: String,
}

/// One shard claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) epoch: u64,
    /// When its claim (or last renewal) was asked for.
    pub(crate) since: Instant,
    /// Past it the shard is not served (leases only).
    pub(crate) until: Option<Instant>,
}

/// The claims of one host.
#[derive(Debug)]
pub(crate) struct Claims {
    args: ClaimsArgs,
    held: HashMap<u32, Held>,
    /// Claims asked for and not answered yet.
    asking: HashSet<u32>,
    /// A renewal asked for and not answered yet.
    renewing: bool,
}

impl Claims {
    pub(crate) fn new(args: ClaimsArgs) -> Self {
        Self {
            args,
            held: HashMap::new(),
            asking: HashSet::new(),
            renewing: false,
        }
    }

    pub(crate) fn store(&self) -> &Arc<StateStore> {
        &self.args.store
    }

    pub(crate) fn owner(&self) -> &str {
        &self.args.owner
    }

    pub(crate) fn lease(&self) -> Option<Duration> {
        self.args.lease
    }

    /// How often leases are renewed: a quarter of their length.
    pub(crate) fn renew_every(&self) -> Option<Duration> {
        self.args.lease.map(|lease| lease / 4)
    }

    /// The claim on `shard` this host may serve under at `now`.
    pub(crate) fn serving(&self, shard: u32, now: Instant) -> Option<Held> {
        self.held
            .get(&shard)
            .copied()
            .filter(|held| held.until.is_none_or(|until| now < until))
    }

    /// Whether a claim of `shard` should be asked for now (none held, none asked);
    /// marks it asked.
    pub(crate) fn ask(&mut self, shard: u32, now: Instant) -> bool {
        if self.serving(shard, now).is_some() || self.asking.contains(&shard) {
            return false;
        }
        self.asking.insert(shard);
        true
    }

    /// The store answered the claim of `shard` asked at `sent`.
    pub(crate) fn claimed(&mut self, shard: u32, sent: Instant, claim: Option<Claim>) {
        self.asking.remove(&shard);
        if let Some(claim) = claim {
            self.held.insert(
                shard,
                Held {
                    epoch: claim.epoch,
                    since: sent,
                    until: self.deadline(sent),
                },
            );
        }
    }

    /// The claim asked for `shard` failed.
    pub(crate) fn not_claimed(&mut self, shard: u32) {
        self.asking.remove(&shard);
    }

    /// Whether a renewal should be asked for now; marks it asked.
    pub(crate) fn ask_renewal(&mut self) -> bool {
        if self.args.lease.is_none() || self.renewing || self.held.is_empty() {
            return false;
        }
        self.renewing = true;
        true
    }

    /// The store renewed `renewed` in a renewal asked at `sent` (`None`: it failed).
    /// Returns the shards lost: held since before `sent` and not renewed at their epoch.
    pub(crate) fn renewed(&mut self, sent: Instant, renewed: Option<&[(u32, Claim)]>) -> Vec<u32> {
        self.renewing = false;
        let Some(renewed) = renewed else {
            return Vec::new();
        };
        let renewed: HashMap<u32, u64> = renewed.iter().map(|(s, c)| (*s, c.epoch)).collect();
        let until = self.deadline(sent);
        let mut lost = Vec::new();
        for (shard, held) in &mut self.held {
            match renewed.get(shard) {
                Some(epoch) if *epoch == held.epoch => {
                    held.since = sent;
                    held.until = until;
                }
                _ if held.since < sent => lost.push(*shard),
                _ => {}
            }
        }
        for shard in &lost {
            self.held.remove(shard);
        }
        lost
    }

    /// Drops the claims whose lease lapsed at `now`; returns their shards.
    pub(crate) fn lapse(&mut self, now: Instant) -> Vec<u32> {
        let lapsed: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, held)| held.until.is_some_and(|until| now >= until))
            .map(|(shard, _)| *shard)
            .collect();
        for shard in &lapsed {
            self.held.remove(shard);
        }
        lapsed
    }

    /// A write under `epoch` of `shard` was fenced: drops the claim if it is that one.
    pub(crate) fn fenced(&mut self, shard: u32, epoch: u64) -> bool {
        if self
            .held
            .get(&shard)
            .is_some_and(|held| held.epoch == epoch)
        {
            self.held.remove(&shard);
            return true;
        }
        false
    }

    /// Drops the claims of the shards `gone` says this host gave up; returns them with
    /// their epochs, to release.
    pub(crate) fn give_up(&mut self, gone: impl Fn(u32) -> bool) -> Vec<(u32, u64)> {
        let given: Vec<(u32, u64)> = self
            .held
            .iter()
            .filter(|(shard, _)| gone(**shard))
            .map(|(shard, held)| (*shard, held.epoch))
            .collect();
        for (shard, _) in &given {
            self.held.remove(shard);
        }
        given
    }

    /// How many shards are claimed.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Until when a claim asked at `sent` may be served: the lease's length from then,
    /// less a quarter for the drain of its entities and a tick's delay.
    fn deadline(&self, sent: Instant) -> Option<Instant> {
        self.args.lease.map(|lease| sent + lease - lease / 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn claims(lease: Option<Duration>) -> Claims {
        // The bookkeeping never uses its store: an in-memory one stands in.
        let store = StateStore::open("sqlite::memory:")
            .await
            .expect("an in-memory store");
        Claims::new(ClaimsArgs {
            store: Arc::new(store),
            lease,
            owner: "a/1".into(),
        })
    }

    fn claim(epoch: u64) -> Option<Claim> {
        Some(Claim {
            epoch,
            expires_at: None,
        })
    }

    #[tokio::test]
    async fn a_lease_is_served_until_three_quarters_of_its_length_from_when_it_was_asked() {
        let mut claims = claims(Some(Duration::from_secs(8))).await;
        let t0 = Instant::now();
        assert!(claims.ask(3, t0));
        assert!(!claims.ask(3, t0), "asked once until answered");
        claims.claimed(3, t0, claim(7));
        assert_eq!(
            claims
                .serving(3, t0 + Duration::from_secs(5))
                .map(|h| h.epoch),
            Some(7)
        );
        assert!(claims.serving(3, t0 + Duration::from_secs(6)).is_none());
        assert_eq!(claims.lapse(t0 + Duration::from_secs(6)), vec![3]);
        assert_eq!(claims.len(), 0);
    }

    #[tokio::test]
    async fn a_renewal_extends_what_it_renewed_and_loses_what_it_did_not() {
        let mut claims = claims(Some(Duration::from_secs(8))).await;
        let t0 = Instant::now();
        for shard in [1, 2] {
            claims.ask(shard, t0);
            claims.claimed(shard, t0, claim(1));
        }
        let t1 = t0 + Duration::from_secs(2);
        // Shard 3 is claimed after the renewal was asked: not lost by it.
        claims.ask(3, t1);
        claims.claimed(3, t1 + Duration::from_millis(1), claim(4));
        assert!(claims.ask_renewal());
        let renewed = [(1, claim(1).unwrap()), (2, claim(2).unwrap())];
        let lost = claims.renewed(t1, Some(&renewed));
        assert_eq!(
            lost,
            vec![2],
            "shard 2 was renewed at another epoch: not ours"
        );
        assert!(claims.serving(1, t1 + Duration::from_secs(5)).is_some());
        assert!(claims.serving(3, t1 + Duration::from_secs(5)).is_some());
        // A failed renewal extends nothing and loses nothing at once.
        assert!(claims.ask_renewal());
        assert!(claims.renewed(t1, None).is_empty());
        assert!(claims.serving(1, t1 + Duration::from_secs(6)).is_none());
    }

    #[tokio::test]
    async fn without_a_lease_a_claim_holds_until_fenced_or_given_up() {
        let mut claims = claims(None).await;
        let t0 = Instant::now();
        claims.ask(5, t0);
        claims.claimed(5, t0, claim(2));
        claims.ask(6, t0);
        claims.claimed(6, t0, claim(1));
        assert!(claims.serving(5, t0 + Duration::from_secs(3600)).is_some());
        assert!(!claims.ask_renewal(), "nothing to renew without leases");
        assert!(
            !claims.fenced(5, 1),
            "an older epoch's fencing is not this claim's"
        );
        assert!(claims.fenced(5, 2));
        assert_eq!(claims.give_up(|shard| shard == 6), vec![(6, 1)]);
        assert_eq!(claims.len(), 0);
    }
}
