//! The cluster as one node sees it, pure: members, their states and named actors, the
//! events between two views, and which node a name resolves to. No tokio, no gossip
//! engine: the node's cluster task (`node/cluster`) turns the gossip state into
//! [`NodeRecord`]s, and everything here is tested without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::wire::NodeIdentity;

/// Gossip key holding the address peers dial for sessions.
pub(crate) const KEY_GRPC: &str = "grpc";
/// Gossip key holding the node's incarnation.
pub(crate) const KEY_INCARNATION: &str = "incarnation";
/// Gossip key set when the node shuts down politely.
pub(crate) const KEY_LEAVING: &str = "leaving";
/// Prefix of the gossip keys naming a registered actor; the value is its protocol.
pub(crate) const PREFIX_NAME: &str = "name:";
/// Prefix of the gossip keys naming a kind the node spawns on request; the value is
/// its description.
pub(crate) const PREFIX_KIND: &str = "kind:";
/// Gossip key listing the entity kinds the node hosts (comma-separated), set at its
/// start: its absence says the part of the node's state that tells is not known yet.
pub(crate) const KEY_ENTITIES: &str = "entities";
/// Prefix of the gossip keys naming an entity kind the node hosts; the value is its
/// protocol.
pub(crate) const PREFIX_ENTITY: &str = "entity:";
/// Prefix of the gossip keys saying which members a node's host of an entity kind has
/// settled on (its shards handed over); the value is their digest.
pub(crate) const PREFIX_SETTLED: &str = "settled:";

/// A member's state, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Its heartbeats arrive: it is in the cluster and its names resolve.
    Up,
    /// It announced it is shutting down: its names no longer resolve.
    Leaving,
    /// Its failure detector's phi passed the threshold: declared dead. Its names no
    /// longer resolve; it becomes `Up` again if its heartbeats come back (a healed
    /// partition).
    Unreachable,
}

impl MemberState {
    /// `up`, `leaving` or `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Leaving => "leaving",
            Self::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An actor a member registered under a name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedActor {
    /// The name sessions are opened to.
    pub name: String,
    /// The protocol it serves; empty for an untyped actor (which accepts any).
    pub protocol: String,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name and incarnation (the incarnation is nil until its gossip state says it).
    pub identity: NodeIdentity,
    /// Its gossip generation: its start time in milliseconds since the Unix epoch. The
    /// name-conflict rule prefers the lowest.
    pub generation: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Where peers open sessions to it (`host:port`), once its gossip state says it.
    pub addr: Option<String>,
    /// Its state.
    pub state: MemberState,
    /// Its named actors, by name.
    pub actors: Vec<NamedActor>,
    /// The kinds of actor it spawns on request, by name.
    pub kinds: Vec<String>,
    /// The entity kinds it hosts, by kind (once its host of each has started).
    pub entity_kinds: Vec<HostedKind>,
    /// The entity kinds it said at its start that it hosts; `None` until that part of its
    /// gossip state is known here.
    pub declared_entity_kinds: Option<Vec<String>>,
}

/// An entity kind a member hosts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostedKind {
    /// The kind.
    pub kind: String,
    /// The protocol its entities speak.
    pub protocol: String,
    /// The digest of the members hosting the kind that the member's host settled on:
    /// it stopped every entity of a shard that member set gives to another. A member
    /// that takes a shard over waits for the shard's previous owner to have settled on
    /// the same members (`docs/semantics.md`, "Entities"). Empty until it settled.
    pub settled: String,
}

impl Member {
    /// Whether its names resolve: up, and reachable at a known address.
    pub fn serves(&self) -> bool {
        self.state == MemberState::Up && self.addr.is_some()
    }

    /// The protocol of its actor named `name`, if it has one.
    pub fn actor(&self, name: &str) -> Option<&NamedActor> {
        // Sorted by name as the gossip state is (a view keeps them so).
        match self.actors.binary_search_by(|a| a.name.as_str().cmp(name)) {
            Ok(at) => self.actors.get(at),
            Err(_) => self.actors.iter().find(|a| a.name == name),
        }
    }

    /// Whether it spawns actors of `kind`.
    pub fn offers(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// The digest of the members its host of `kind` settled on, if it hosts the kind
    /// and settled.
    pub fn settled(&self, kind: &str) -> Option<&str> {
        self.entity_kinds
            .iter()
            .find(|k| k.kind == kind && !k.settled.is_empty())
            .map(|k| k.settled.as_str())
    }

    /// Whether it hosts entities of `kind`.
    pub fn hosts(&self, kind: &str) -> bool {
        self.entity_kinds.iter().any(|k| k.kind == kind)
    }
}

/// A change in the cluster, delivered to subscribed actors in their one mailbox
/// ([`crate::Mailbox::Cluster`], or `From<ClusterEvent>` for an untyped one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The members as they are when the actor subscribed; the events that follow are
    /// changes from this.
    Current(Vec<Member>),
    /// A node joined (its first heartbeat arrived).
    Joined(Member),
    /// A node announced it is shutting down: its names are gone.
    Left(Member),
    /// A node was declared dead by the failure detector: its names are gone.
    Unreachable(Member),
    /// A node declared dead is heard from again (a healed partition): its names are back.
    Reachable(Member),
    /// A node no longer in the gossip state: left or dead past the grace period.
    Removed(Member),
    /// Two or more serving nodes registered one name. Lookups resolve it to `winner`
    /// (the rule: the node with the lowest generation, that is the longest running, then
    /// the lowest node name); told once per change of the contenders.
    NameConflict {
        /// The contested name.
        name: String,
        /// The node lookups resolve it to.
        winner: NodeIdentity,
        /// The other nodes that registered it.
        others: Vec<NodeIdentity>,
    },
    /// This node's gossip engine failed: its view of the cluster no longer changes, so
    /// lookups and member lists fail from now on, and no further event comes. Restart
    /// the node.
    GossipStopped {
        /// What the engine said.
        reason: String,
    },
}

// With ractor's `cluster` feature, ractor implements `Message` only for types that say so
// (an actor may take cluster events as its whole `Msg`).
#[cfg(feature = "ractor-cluster")]
impl ractor::Message for ClusterEvent {}

/// One node's gossip state, as the gossip engine holds it: the input of [`View::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeRecord {
    pub(crate) node_id: String,
    pub(crate) generation: u64,
    pub(crate) gossip_addr: SocketAddr,
    /// Live by the failure detector (always true for this node itself).
    pub(crate) live: bool,
    /// Its gossip state's version: it grows with every change of its keys.
    pub(crate) version: u64,
    pub(crate) keys: BTreeMap<String, String>,
}

impl NodeRecord {
    /// The key of its member in a view.
    pub(crate) fn key(&self) -> MemberKey {
        (self.node_id.clone(), self.generation, self.gossip_addr)
    }
}

/// The key of a member in a view: one node incarnation (a restarted node is another).
pub(crate) type MemberKey = (String, u64, SocketAddr);

/// The cluster at one moment, built from the gossip engine's node records, and kept
/// current by [`View::update`] at the cost of what changed: members whose gossip state
/// did not change are not read again, and only the names of members that changed are
/// looked at for conflicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    members: BTreeMap<MemberKey, Arc<Member>>,
    /// Each member's gossip-state version and liveness, as last read.
    stamps: HashMap<MemberKey, (u64, bool)>,
    /// The members ever seen up: a node is known to the gossip state before its
    /// failure detector has heard enough heartbeats to call it live, and that first
    /// silence is a join in progress, not a death.
    seen_up: BTreeSet<MemberKey>,
    /// The members told `Left`: a member that said it leaves is told so once, whether its
    /// leave was read while it was up or only once it fell silent (a member wrongly
    /// suspected just before it left politely).
    told_left: BTreeSet<MemberKey>,
    /// Every name registered on a member, with the members that registered it.
    names: HashMap<String, Vec<MemberKey>>,
}

impl View {
    /// The view of `records`, with no history.
    #[cfg(test)]
    pub(crate) fn new(records: impl IntoIterator<Item = NodeRecord>) -> Self {
        Self::default().next(records)
    }

    /// The view of exactly `records` after this one.
    #[cfg(test)]
    pub(crate) fn next(&self, records: impl IntoIterator<Item = NodeRecord>) -> Self {
        let records: Vec<NodeRecord> = records.into_iter().collect();
        let present: Vec<MemberKey> = records.iter().map(NodeRecord::key).collect();
        let mut next = self.clone();
        next.update(&present, records);
        next
    }

    /// Whether the member `key` must be read again: its gossip state's `version` or its
    /// liveness changed since this view read it (or it is new).
    pub(crate) fn stale(&self, key: &MemberKey, version: u64, live: bool) -> bool {
        self.stamps.get(key) != Some(&(version, live))
    }

    /// Brings the view to the gossip state: `present` are every member's keys now,
    /// `changed` the records of those [`View::stale`] said to read again. Returns what
    /// changed, in order: membership first, then the contested names whose contenders
    /// changed.
    pub(crate) fn update(
        &mut self,
        present: &[MemberKey],
        changed: Vec<NodeRecord>,
    ) -> Vec<ClusterEvent> {
        let present: std::collections::HashSet<&MemberKey> = present.iter().collect();
        let removed: Vec<MemberKey> = self
            .members
            .keys()
            .filter(|key| !present.contains(key))
            .cloned()
            .collect();
        let changed: Vec<(MemberKey, (u64, bool), Member, bool)> = changed
            .into_iter()
            .map(|record| {
                let leaving = record.keys.contains_key(KEY_LEAVING);
                (
                    record.key(),
                    (record.version, record.live),
                    member_of(record),
                    leaving,
                )
            })
            .collect();
        // Every name the change may touch, with its contenders before it: all the names
        // of a member that goes or starts or stops serving, only those registered or
        // withdrawn of one that keeps serving.
        let mut before: BTreeMap<String, Vec<NodeIdentity>> = BTreeMap::new();
        let mut touched = |name: &str, view: &Self| {
            if !before.contains_key(name) {
                before.insert(name.to_owned(), view.contenders(name));
            }
        };
        for member in removed.iter().filter_map(|key| self.members.get(key)) {
            for actor in &member.actors {
                touched(&actor.name, self);
            }
        }
        for (key, _, after, _) in &changed {
            match self.members.get(key) {
                Some(was) if was.serves() == after.serves() => {
                    for name in registered_or_withdrawn(&was.actors, &after.actors) {
                        touched(name, self);
                    }
                }
                was => {
                    let old = was.map(|m| m.actors.as_slice()).unwrap_or_default();
                    for actor in old.iter().chain(&after.actors) {
                        touched(&actor.name, self);
                    }
                }
            }
        }
        let mut events = Vec::new();
        for key in removed {
            if let Some(member) = self.members.remove(&key) {
                self.unindex(&key, &member);
                events.push(ClusterEvent::Removed(Arc::unwrap_or_clone(member)));
            }
            self.stamps.remove(&key);
            self.seen_up.remove(&key);
            self.told_left.remove(&key);
        }
        for (key, stamp, after, leaving) in changed {
            self.stamps.insert(key.clone(), stamp);
            let was = self
                .members
                .get(&key)
                .filter(|_| self.seen_up.contains(&key))
                .map(|m| m.state);
            match was {
                None if after.state == MemberState::Up => {
                    events.push(ClusterEvent::Joined(after.clone()));
                }
                // First seen already leaving or dead: nothing to tell until it is up.
                None => {}
                Some(_) if leaving && self.told_left.contains(&key) => {}
                // Its leave read only now that it is silent: it left, as it said.
                Some(_) if leaving && after.state == MemberState::Unreachable => {
                    events.push(ClusterEvent::Left(after.clone()));
                }
                Some(before) => {
                    if let Some(event) = transition(before, &after) {
                        events.push(event);
                    }
                }
            }
            if leaving && self.seen_up.contains(&key) {
                self.told_left.insert(key.clone());
            }
            if after.state != MemberState::Unreachable {
                self.seen_up.insert(key.clone());
            }
            if let Some(old) = self.members.remove(&key) {
                self.unindex(&key, &old);
            }
            for actor in &after.actors {
                self.names
                    .entry(actor.name.clone())
                    .or_default()
                    .push(key.clone());
            }
            self.members.insert(key, Arc::new(after));
        }
        for (name, was) in before {
            let now = self.contenders(&name);
            if now.len() > 1 && now != was {
                let mut holders = now.into_iter();
                if let Some(winner) = holders.next() {
                    events.push(ClusterEvent::NameConflict {
                        name,
                        winner,
                        others: holders.collect(),
                    });
                }
            }
        }
        events
    }

    /// Forgets `member`'s names under `key`.
    fn unindex(&mut self, key: &MemberKey, member: &Member) {
        for actor in &member.actors {
            if let Some(holders) = self.names.get_mut(&actor.name) {
                holders.retain(|k| k != key);
                if holders.is_empty() {
                    self.names.remove(&actor.name);
                }
            }
        }
    }

    /// The holders of `name` by the rule, when more than one serves it (else empty).
    fn contenders(&self, name: &str) -> Vec<NodeIdentity> {
        let holders = self.holders(name);
        if holders.len() > 1 {
            holders.iter().map(|m| m.identity.clone()).collect()
        } else {
            Vec::new()
        }
    }

    /// How many members it has.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Every member, ordered by name then generation.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.members.values().map(|m| (**m).clone()).collect()
    }

    /// Every member, ordered by name then generation, without copying.
    pub(crate) fn each(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values().map(|m| &**m)
    }

    /// Every member's state.
    pub(crate) fn states(&self) -> impl Iterator<Item = MemberState> + '_ {
        self.members.values().map(|m| m.state)
    }

    /// How many names the members registered, in all.
    pub(crate) fn names(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }

    /// The members that resolve names and have registered `name`, the rule's winner
    /// first ([`name_holders`]).
    pub(crate) fn holders(&self, name: &str) -> Vec<&Member> {
        let Some(keys) = self.names.get(name) else {
            return Vec::new();
        };
        name_holders(
            keys.iter()
                .filter_map(|key| self.members.get(key).map(|m| &**m)),
            name,
        )
    }

    /// The serving members that spawn `kind`, in the order "any node that offers the
    /// kind" tries them ([`spawn_candidates`]).
    pub(crate) fn offering(&self, kind: &str) -> Vec<&Member> {
        spawn_candidates(self.members.values().map(|m| &**m), kind)
    }

    /// The serving member named `node`, the newest incarnation if several.
    pub(crate) fn serving(&self, node: &str) -> Option<&Member> {
        self.members
            .values()
            .map(|m| &**m)
            .filter(|m| m.identity.name == node && m.serves())
            .max_by_key(|m| m.generation)
    }
}

/// The names in one of `old` and `new` (both in name order) and not the other.
fn registered_or_withdrawn<'a>(
    old: &'a [NamedActor],
    new: &'a [NamedActor],
) -> impl Iterator<Item = &'a str> {
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    std::iter::from_fn(move || {
        loop {
            match (old.peek(), new.peek()) {
                (Some(a), Some(b)) => match a.name.cmp(&b.name) {
                    std::cmp::Ordering::Equal => {
                        old.next();
                        new.next();
                    }
                    std::cmp::Ordering::Less => return old.next().map(|a| a.name.as_str()),
                    std::cmp::Ordering::Greater => return new.next().map(|b| b.name.as_str()),
                },
                (Some(_), None) => return old.next().map(|a| a.name.as_str()),
                (None, _) => return new.next().map(|b| b.name.as_str()),
            }
        }
    })
}

/// The members of `members` that resolve names and have registered `name`, in the
/// order of the conflict rule: lowest generation (the longest running node) first, then
/// lowest node name. Lookups resolve the name to the first.
pub fn name_holders<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    name: &str,
) -> Vec<&'a Member> {
    let mut holders: Vec<&Member> = members
        .into_iter()
        .filter(|m| m.serves() && m.actor(name).is_some())
        .collect();
    holders.sort_by(|a, b| (a.generation, &a.identity.name).cmp(&(b.generation, &b.identity.name)));
    holders
}

/// The members of `members` that serve and spawn `kind`, fewest named actors first (then
/// lowest name): where [`crate::cluster::SpawnOn::AnyOffering`] sends a spawn (the first).
pub fn spawn_candidates<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    kind: &str,
) -> Vec<&'a Member> {
    let mut offering: Vec<&Member> = members
        .into_iter()
        .filter(|m| m.serves() && m.offers(kind))
        .collect();
    offering.sort_by(|a, b| {
        (a.actors.len(), &a.identity.name).cmp(&(b.actors.len(), &b.identity.name))
    });
    offering
}

/// The event for a member whose state went from `before` to `after.state`.
fn transition(before: MemberState, after: &Member) -> Option<ClusterEvent> {
    use MemberState::{Leaving, Unreachable, Up};
    let member = after.clone();
    match (before, after.state) {
        (Up, Leaving) => Some(ClusterEvent::Left(member)),
        (Up, Unreachable) => Some(ClusterEvent::Unreachable(member)),
        (Unreachable, Up) => Some(ClusterEvent::Reachable(member)),
        // A node that said it leaves and then fell silent has left, as told.
        (Leaving, Unreachable) => None,
        // Dead, then heard from while leaving: it left.
        (Unreachable, Leaving) => Some(ClusterEvent::Left(member)),
        _ => None,
    }
}

fn member_of(record: NodeRecord) -> Member {
    let NodeRecord {
        node_id,
        generation,
        gossip_addr,
        live,
        keys,
        ..
    } = record;
    let state = if !live {
        MemberState::Unreachable
    } else if keys.contains_key(KEY_LEAVING) {
        MemberState::Leaving
    } else {
        MemberState::Up
    };
    let incarnation = keys
        .get(KEY_INCARNATION)
        .and_then(|text| Uuid::parse_str(text).ok())
        .unwrap_or_default();
    let actors = keys
        .iter()
        .filter_map(|(key, protocol)| {
            key.strip_prefix(PREFIX_NAME).map(|name| NamedActor {
                name: name.to_owned(),
                protocol: protocol.clone(),
            })
        })
        .collect();
    let kinds = keys
        .keys()
        .filter_map(|key| key.strip_prefix(PREFIX_KIND).map(str::to_owned))
        .collect();
    let entity_kinds = keys
        .iter()
        .filter_map(|(key, protocol)| {
            let kind = key.strip_prefix(PREFIX_ENTITY)?;
            Some(HostedKind {
                kind: kind.to_owned(),
                protocol: protocol.clone(),
                settled: keys
                    .get(&format!("{PREFIX_SETTLED}{kind}"))
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect();
    let declared_entity_kinds = keys.get(KEY_ENTITIES).map(|list| {
        list.split(',')
            .filter(|kind| !kind.is_empty())
            .map(str::to_owned)
            .collect()
    });
    Member {
        identity: NodeIdentity {
            name: node_id,
            incarnation,
        },
        generation,
        gossip_addr,
        addr: keys.get(KEY_GRPC).cloned(),
        state,
        actors,
        kinds,
        entity_kinds,
        declared_entity_kinds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, generation: u64, live: bool, keys: &[(&str, &str)]) -> NodeRecord {
        let mut all: BTreeMap<String, String> = keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.entry(KEY_GRPC.into())
            .or_insert_with(|| format!("{name}.test:7000"));
        NodeRecord {
            node_id: name.into(),
            generation,
            gossip_addr: format!("10.0.0.{}:7001", generation % 250).parse().unwrap(),
            live,
            version: 0,
            keys: all,
        }
    }

    fn names(events: &[ClusterEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ClusterEvent::Current(_) => "current".into(),
                ClusterEvent::Joined(m) => format!("joined {}", m.identity.name),
                ClusterEvent::Left(m) => format!("left {}", m.identity.name),
                ClusterEvent::Unreachable(m) => format!("unreachable {}", m.identity.name),
                ClusterEvent::Reachable(m) => format!("reachable {}", m.identity.name),
                ClusterEvent::Removed(m) => format!("removed {}", m.identity.name),
                ClusterEvent::NameConflict { name, winner, .. } => {
                    format!("conflict {name} -> {}", winner.name)
                }
                ClusterEvent::GossipStopped { reason } => format!("stopped {reason}"),
            })
            .collect()
    }

    /// The view after `records` (every member read again), and the events on the way.
    fn step(view: &View, records: Vec<NodeRecord>) -> (View, Vec<String>) {
        let present: Vec<MemberKey> = records.iter().map(NodeRecord::key).collect();
        let mut next = view.clone();
        let events = next.update(&present, records);
        (next, names(&events))
    }

    #[test]
    fn a_member_suspected_before_its_leave_arrived_is_told_left_once() {
        let leave = [(KEY_LEAVING, "1")];
        let (up, _) = step(&View::default(), vec![record("a", 1, true, &[])]);
        // A late heartbeat: suspected, then its leave arrives while it is silent.
        let (suspected, unreachable) = step(&up, vec![record("a", 1, false, &[])]);
        let (gone, left) = step(&suspected, vec![record("a", 1, false, &leave)]);
        let (_, again) = step(&gone, vec![record("a", 1, false, &leave)]);
        assert_eq!(unreachable, ["unreachable a"]);
        assert_eq!(left, ["left a"]);
        assert!(again.is_empty(), "told once: {again:?}");
        // Its leave and its silence read at once.
        let (_, left) = step(&up, vec![record("a", 1, false, &leave)]);
        assert_eq!(left, ["left a"]);
        // Heard from again while leaving, after being told: nothing more.
        let (back, _) = step(&gone, vec![record("a", 1, true, &leave)]);
        let (_, silent) = step(&back, vec![record("a", 1, false, &leave)]);
        assert!(silent.is_empty(), "{silent:?}");
    }

    #[test]
    fn a_member_goes_through_join_unreachable_reachable_leave_and_removal() {
        let empty = View::default();
        let (up, joined) = step(&empty, vec![record("a", 1, true, &[])]);
        let (dead, unreachable) = step(&up, vec![record("a", 1, false, &[])]);
        let (back, reachable) = step(&dead, vec![record("a", 1, true, &[])]);
        let (leaving, left) = step(&back, vec![record("a", 1, true, &[(KEY_LEAVING, "1")])]);
        let (silent, told) = step(&leaving, vec![record("a", 1, false, &[(KEY_LEAVING, "1")])]);
        let (_, removed) = step(&silent, vec![]);
        assert_eq!(joined, ["joined a"]);
        assert_eq!(unreachable, ["unreachable a"]);
        assert_eq!(reachable, ["reachable a"]);
        assert_eq!(left, ["left a"]);
        // Silent after leaving: already told.
        assert!(told.is_empty());
        assert_eq!(removed, ["removed a"]);
        // First seen dead: nothing to tell.
        assert!(step(&empty, vec![record("a", 1, false, &[])]).1.is_empty());
        assert!(step(&up, vec![record("a", 1, true, &[])]).1.is_empty());
    }

    #[test]
    fn a_node_known_before_its_first_heartbeats_joins_when_they_come() {
        let (joining, events) = step(&View::default(), vec![record("a", 1, false, &[])]);
        assert!(events.is_empty());
        let (up, events) = step(&joining, vec![record("a", 1, true, &[])]);
        assert_eq!(events, ["joined a"]);
        // Once seen up, silence is a death, and hearing it again a return.
        let (dead, events) = step(&up, vec![record("a", 1, false, &[])]);
        assert_eq!(events, ["unreachable a"]);
        assert_eq!(
            step(&dead, vec![record("a", 1, true, &[])]).1,
            ["reachable a"]
        );
    }

    #[test]
    fn a_restarted_node_is_a_new_member() {
        let old = View::new([record("a", 1, true, &[])]);
        let (both, events) = step(
            &old,
            vec![record("a", 1, false, &[]), record("a", 2, true, &[])],
        );
        assert_eq!(events, ["unreachable a", "joined a"]);
        assert_eq!(both.serving("a").unwrap().generation, 2);
    }

    #[test]
    fn names_resolve_only_on_serving_members() {
        let view = View::new([
            record("a", 1, true, &[("name:room", "chat.v1.Chat")]),
            record("b", 2, false, &[("name:gone", "")]),
            record("c", 3, true, &[("name:bye", ""), (KEY_LEAVING, "1")]),
        ]);
        let holders = view.holders("room");
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].actor("room").unwrap().protocol, "chat.v1.Chat");
        assert!(view.holders("gone").is_empty());
        assert!(view.holders("bye").is_empty());
        assert!(view.holders("nothing").is_empty());
    }

    #[test]
    fn a_member_without_an_address_does_not_serve() {
        let mut no_addr = record("a", 1, true, &[("name:room", "")]);
        no_addr.keys.remove(KEY_GRPC);
        assert!(View::new([no_addr]).holders("room").is_empty());
    }

    #[test]
    fn a_contested_name_goes_to_the_longest_running_node_then_the_lowest_name() {
        let three = || {
            vec![
                record("c", 5, true, &[("name:room", "")]),
                record("b", 3, true, &[("name:room", "")]),
                record("a", 3, true, &[("name:room", "")]),
            ]
        };
        let (view, events) = step(&View::default(), three());
        let winners: Vec<_> = view
            .holders("room")
            .iter()
            .map(|m| m.identity.name.clone())
            .collect();
        assert_eq!(winners, ["a", "b", "c"]);
        assert_eq!(
            events,
            ["joined c", "joined b", "joined a", "conflict room -> a"]
        );
        // Told once: the same contenders again say nothing.
        assert!(
            !step(&view, three())
                .1
                .iter()
                .any(|e| e.starts_with("conflict"))
        );
        // The winner dies: the next one takes the name, and the change is told.
        let (_, events) = step(
            &view,
            vec![
                record("c", 5, true, &[("name:room", "")]),
                record("b", 3, true, &[("name:room", "")]),
                record("a", 3, false, &[("name:room", "")]),
            ],
        );
        assert_eq!(events, ["unreachable a", "conflict room -> b"]);
    }

    #[test]
    fn only_the_members_that_changed_are_read_again_and_their_names_looked_at() {
        // A thousand names on each of three nodes; then one node registers one more.
        let keys_of = |node: &str, n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("name:{node}-{i}"), String::new()))
                .collect()
        };
        let with = |name: &str, generation, keys: &[(String, String)], version| {
            let keys: Vec<(&str, &str)> =
                keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            NodeRecord {
                version,
                ..record(name, generation, true, &keys)
            }
        };
        let (a, b, c) = (keys_of("a", 1000), keys_of("b", 1000), keys_of("c", 1000));
        let (view, _) = step(
            &View::default(),
            vec![
                with("a", 1, &a, 1),
                with("b", 2, &b, 1),
                with("c", 3, &c, 1),
            ],
        );
        let key = |r: &NodeRecord| r.key();
        let (ra, rb) = (with("a", 1, &a, 1), with("b", 2, &b, 1));
        assert!(!view.stale(&key(&ra), 1, true), "unchanged: not read again");
        let mut more = b.clone();
        more.push(("name:a-7".into(), String::new()));
        let rb2 = with("b", 2, &more, 2);
        assert!(view.stale(&key(&rb2), 2, true));
        let present = vec![key(&ra), key(&rb), key(&with("c", 3, &c, 1))];
        let mut next = view.clone();
        let events = next.update(&present, vec![rb2]);
        assert_eq!(names(&events), ["conflict a-7 -> a"]);
        assert_eq!(next.names(), 3001);
        assert_eq!(next.holders("b-999").len(), 1);
    }

    #[test]
    fn spawns_go_to_the_least_loaded_node_that_offers_the_kind() {
        let view = View::new([
            record(
                "a",
                1,
                true,
                &[("kind:room", "x"), ("name:r1", ""), ("name:r2", "")],
            ),
            record("b", 2, true, &[("kind:room", "x"), ("name:r3", "")]),
            record("c", 3, true, &[("kind:other", "y")]),
            record("d", 4, false, &[("kind:room", "x")]),
        ]);
        let offering: Vec<_> = view
            .offering("room")
            .iter()
            .map(|m| m.identity.name.clone())
            .collect();
        assert_eq!(offering, ["b", "a"]);
        assert!(view.offering("nothing").is_empty());
    }

    #[test]
    fn the_incarnation_is_read_from_the_gossip_state() {
        let id = Uuid::new_v4();
        let view = View::new([record("a", 1, true, &[(KEY_INCARNATION, &id.to_string())])]);
        assert_eq!(view.members()[0].identity.incarnation, id);
    }
}
