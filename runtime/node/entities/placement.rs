//! Where an entity lives, pure: ids map to a fixed number of shards, shards to the
//! members that host the kind, by rendezvous (highest random weight) hashing. No
//! coordinator, and nothing per entity in gossip: every node computes the same owner
//! from the same view, and a member that comes or goes moves only the shards it wins or
//! held (about `1 / members` of them).
//!
//! The rule, for any language to compute (`docs/protocol.md`, "Entities"):
//! - `shard(id) = u64_be(sha256(id)[0..8]) mod shards`
//! - `weight(kind, shard, node) = u64_be(sha256(kind "/" shard "/" node)[0..8])`, the
//!   shard in decimal, `node` the member's name;
//! - the owner is the hosting member of highest weight (ties: the lowest name).
//!
//! SHA-256 rather than a faster hash: every gRPC language has it in its standard
//! library, and a shard's owner is computed once per view change, not per message.

use sha2::{Digest, Sha256};

/// The first 8 bytes of SHA-256 over `parts`, big-endian.
fn hash64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shard of `id` among `shards` (at least 1).
pub(crate) fn shard_of(id: &str, shards: u32) -> u32 {
    let shards = u64::from(shards.max(1));
    // The remainder is below `shards`, a u32.
    (hash64(&[id.as_bytes()]) % shards) as u32
}

/// The weight of `node` for `shard` of `kind`: the highest wins.
fn weight(kind: &str, shard: u32, node: &str) -> u64 {
    hash64(&[
        kind.as_bytes(),
        b"/",
        shard.to_string().as_bytes(),
        b"/",
        node.as_bytes(),
    ])
}

/// The owner of every shard of one kind in one view: an index into the hosting members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardTable {
    /// The members that host the kind, sorted by name.
    hosts: Vec<String>,
    /// For each shard, its owner's index in `hosts`; empty when none hosts the kind.
    owners: Vec<u16>,
}

impl ShardTable {
    /// The table of `kind` over `shards` shards, hosted by `hosts` (any order; at most
    /// `u16::MAX` of them are considered).
    pub(crate) fn new(kind: &str, shards: u32, hosts: impl IntoIterator<Item = String>) -> Self {
        let mut hosts: Vec<String> = hosts.into_iter().collect();
        hosts.sort();
        hosts.dedup();
        hosts.truncate(usize::from(u16::MAX));
        let owners = if hosts.is_empty() {
            Vec::new()
        } else {
            (0..shards.max(1))
                .map(|shard| {
                    let mut best = (0u64, 0u16);
                    for (at, host) in hosts.iter().enumerate() {
                        let w = weight(kind, shard, host);
                        // Sorted by name: the first of equal weights is the lowest name.
                        if at == 0 || w > best.0 {
                            best = (w, at as u16);
                        }
                    }
                    best.1
                })
                .collect()
        };
        Self { hosts, owners }
    }

    /// The member that owns `shard`, if any hosts the kind.
    pub(crate) fn owner(&self, shard: u32) -> Option<&str> {
        let at = *self.owners.get(shard as usize)?;
        self.hosts.get(usize::from(at)).map(String::as_str)
    }

    /// The table of the same kind and shards over the same hosts but `node`.
    pub(crate) fn without(&self, kind: &str, node: &str) -> Self {
        let shards = u32::try_from(self.owners.len()).unwrap_or(u32::MAX);
        Self::new(
            kind,
            shards.max(1),
            self.hosts.iter().filter(|h| *h != node).cloned(),
        )
    }

    /// How many shards it places.
    pub(crate) fn shards(&self) -> u32 {
        u32::try_from(self.owners.len()).unwrap_or(u32::MAX)
    }

    /// Whether `node` hosts the kind in this table.
    pub(crate) fn has(&self, node: &str) -> bool {
        self.hosts
            .binary_search_by(|h| h.as_str().cmp(node))
            .is_ok()
    }

    /// The digest of its hosts: the first 8 bytes of SHA-256 over their names, each
    /// followed by a newline, in hex. Two members whose tables have the same digest give
    /// every shard the same owner.
    pub(crate) fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for host in &self.hosts {
            hasher.update(host.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
impl ShardTable {
    /// The shards `node` owns.
    pub(crate) fn shards_of(&self, node: &str) -> impl Iterator<Item = u32> + '_ {
        let at = self.hosts.iter().position(|h| h == node);
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, owner)| Some(usize::from(**owner)) == at)
            .map(|(shard, _)| shard as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(hosts: &[&str]) -> ShardTable {
        ShardTable::new("cart", 1024, hosts.iter().map(|h| (*h).to_owned()))
    }

    #[test]
    fn the_rule_is_the_documented_one() {
        // Computed with Python's hashlib, as docs/protocol.md spells the rule:
        // int.from_bytes(hashlib.sha256(b"cart-42").digest()[:8], "big") % 1024
        assert_eq!(shard_of("cart-42", 1024), 0x146);
        assert_eq!(shard_of("", 1), 0);
    }

    #[test]
    fn every_node_computes_the_same_owners_whatever_order_it_saw_the_members_in() {
        assert_eq!(table(&["a", "b", "c"]), table(&["c", "a", "b"]));
        assert_eq!(table(&[]).owner(3), None);
    }

    #[test]
    fn the_digest_names_the_hosts_whatever_their_order() {
        assert_eq!(table(&["a", "b"]).digest(), table(&["b", "a"]).digest());
        assert_ne!(
            table(&["a", "b"]).digest(),
            table(&["a", "b", "c"]).digest()
        );
        assert_eq!(
            table(&["a", "b", "c"]).without("cart", "c"),
            table(&["a", "b"])
        );
        // Python: hashlib.sha256(b"a\nb\n").hexdigest()[:16]
        assert_eq!(table(&["a", "b"]).digest(), "911169ddaaf146af");
    }

    #[test]
    fn shards_spread_over_the_hosts() {
        let t = table(&["a", "b", "c"]);
        for host in ["a", "b", "c"] {
            let owned = t.shards_of(host).count();
            assert!((250..430).contains(&owned), "{host} owns {owned} of 1024");
        }
    }

    #[test]
    fn a_member_that_joins_takes_only_shards_it_wins_and_a_member_that_leaves_gives_only_its_own() {
        let before = table(&["a", "b", "c"]);
        let joined = table(&["a", "b", "c", "d"]);
        let mut moved = 0;
        for shard in 0..1024 {
            if before.owner(shard) != joined.owner(shard) {
                assert_eq!(
                    joined.owner(shard),
                    Some("d"),
                    "shard {shard} moved elsewhere"
                );
                moved += 1;
            }
        }
        assert!(
            (180..340).contains(&moved),
            "{moved} of 1024 moved to the fourth"
        );
        let left = table(&["a", "c"]);
        for shard in 0..1024 {
            if before.owner(shard) != Some("b") {
                assert_eq!(before.owner(shard), left.owner(shard), "shard {shard}");
            }
        }
    }
}
