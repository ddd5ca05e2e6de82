//! The cluster as one node sees it, pure: members, their states and named actors, the
//! events between two views, and which node a name resolves to. No tokio, no gossip
//! engine: the node's cluster task (`node/cluster`) turns the gossip state into
//! [`NodeRecord`]s, and everything here is tested without a network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

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
}

impl Member {
    /// Whether its names resolve: up, and reachable at a known address.
    pub fn serves(&self) -> bool {
        self.state == MemberState::Up && self.addr.is_some()
    }

    /// The protocol of its actor named `name`, if it has one.
    pub fn actor(&self, name: &str) -> Option<&NamedActor> {
        self.actors.iter().find(|a| a.name == name)
    }

    /// Whether it spawns actors of `kind`.
    pub fn offers(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
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

/// One node's gossip state, as the gossip engine holds it: the input of [`View::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeRecord {
    pub(crate) node_id: String,
    pub(crate) generation: u64,
    pub(crate) gossip_addr: SocketAddr,
    /// Live by the failure detector (always true for this node itself).
    pub(crate) live: bool,
    pub(crate) keys: BTreeMap<String, String>,
}

/// The key of a member in a view: one node incarnation (a restarted node is another).
type MemberKey = (String, u64, SocketAddr);

/// The cluster at one moment, built from the gossip engine's node records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    members: BTreeMap<MemberKey, Member>,
    /// The members ever seen up: a node is known to the gossip state before its
    /// failure detector has heard enough heartbeats to call it live, and that first
    /// silence is a join in progress, not a death.
    seen_up: std::collections::BTreeSet<MemberKey>,
}

impl View {
    /// The view of `records`, with no history.
    #[cfg(test)]
    pub(crate) fn new(records: impl IntoIterator<Item = NodeRecord>) -> Self {
        Self::default().next(records)
    }

    /// The view of `records` after this one.
    pub(crate) fn next(&self, records: impl IntoIterator<Item = NodeRecord>) -> Self {
        let members: BTreeMap<MemberKey, Member> = records
            .into_iter()
            .map(|record| {
                let key = (
                    record.node_id.clone(),
                    record.generation,
                    record.gossip_addr,
                );
                (key, member_of(record))
            })
            .collect();
        let seen_up = members
            .iter()
            .filter(|(key, m)| m.state != MemberState::Unreachable || self.seen_up.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        Self { members, seen_up }
    }

    /// Every member, ordered by name then generation.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// The members that resolve names and have registered `name`, the rule's winner
    /// first ([`name_holders`]).
    pub(crate) fn holders(&self, name: &str) -> Vec<&Member> {
        name_holders(self.members.values(), name)
    }

    /// The serving members that spawn `kind`, in the order "any node that offers the
    /// kind" tries them ([`spawn_candidates`]).
    pub(crate) fn offering(&self, kind: &str) -> Vec<&Member> {
        spawn_candidates(self.members.values(), kind)
    }

    /// The serving member named `node`, the newest incarnation if several.
    pub(crate) fn serving(&self, node: &str) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| m.identity.name == node && m.serves())
            .max_by_key(|m| m.generation)
    }

    /// What changed from `self` to `next`, in order: membership first, then names
    /// contested in `next` whose contenders changed.
    pub(crate) fn events_to(&self, next: &Self) -> Vec<ClusterEvent> {
        let mut events = Vec::new();
        for (key, after) in &next.members {
            let before = self
                .members
                .get(key)
                .filter(|_| self.seen_up.contains(key))
                .map(|m| m.state);
            match before {
                None if after.state == MemberState::Up => {
                    events.push(ClusterEvent::Joined(after.clone()));
                }
                // First seen already leaving or dead: nothing to tell until it is up.
                None => {}
                Some(before) => {
                    if let Some(event) = transition(before, after) {
                        events.push(event);
                    }
                }
            }
        }
        for (key, before) in &self.members {
            if !next.members.contains_key(key) {
                events.push(ClusterEvent::Removed(before.clone()));
            }
        }
        for (name, holders) in next.contested() {
            if self.contested().get(&name) != Some(&holders) {
                let mut holders = holders.into_iter();
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

    /// Names held by more than one serving member, each with its holders, winner first.
    fn contested(&self) -> BTreeMap<String, Vec<NodeIdentity>> {
        let mut names: Vec<&str> = self
            .members
            .values()
            .filter(|m| m.serves())
            .flat_map(|m| m.actors.iter().map(|a| a.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let holders = self.holders(name);
                (holders.len() > 1).then(|| {
                    let ids = holders.iter().map(|m| m.identity.clone()).collect();
                    (name.to_owned(), ids)
                })
            })
            .collect()
    }
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
/// lowest name): where [`crate::SpawnOn::AnyOffering`] sends a spawn (the first).
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

    #[test]
    fn a_member_goes_through_join_unreachable_reachable_leave_and_removal() {
        let empty = View::default();
        let up = empty.next([record("a", 1, true, &[])]);
        let dead = up.next([record("a", 1, false, &[])]);
        let back = dead.next([record("a", 1, true, &[])]);
        let leaving = back.next([record("a", 1, true, &[(KEY_LEAVING, "1")])]);
        let silent = leaving.next([record("a", 1, false, &[(KEY_LEAVING, "1")])]);
        let removed = silent.next([]);
        assert_eq!(names(&empty.events_to(&up)), ["joined a"]);
        assert_eq!(names(&up.events_to(&dead)), ["unreachable a"]);
        assert_eq!(names(&dead.events_to(&back)), ["reachable a"]);
        assert_eq!(names(&back.events_to(&leaving)), ["left a"]);
        // Silent after leaving: already told.
        assert!(leaving.events_to(&silent).is_empty());
        assert_eq!(names(&silent.events_to(&removed)), ["removed a"]);
        // First seen dead: nothing to tell.
        assert!(
            empty
                .events_to(&View::new([record("a", 1, false, &[])]))
                .is_empty()
        );
        assert!(up.events_to(&up).is_empty());
    }

    #[test]
    fn a_node_known_before_its_first_heartbeats_joins_when_they_come() {
        let joining = View::default().next([record("a", 1, false, &[])]);
        assert!(View::default().events_to(&joining).is_empty());
        let up = joining.next([record("a", 1, true, &[])]);
        assert_eq!(names(&joining.events_to(&up)), ["joined a"]);
        // Once seen up, silence is a death, and hearing it again a return.
        let dead = up.next([record("a", 1, false, &[])]);
        assert_eq!(names(&up.events_to(&dead)), ["unreachable a"]);
        let back = dead.next([record("a", 1, true, &[])]);
        assert_eq!(names(&dead.events_to(&back)), ["reachable a"]);
    }

    #[test]
    fn a_restarted_node_is_a_new_member() {
        let old = View::new([record("a", 1, true, &[])]);
        let both = View::new([record("a", 1, false, &[]), record("a", 2, true, &[])]);
        assert_eq!(names(&old.events_to(&both)), ["unreachable a", "joined a"]);
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
        let view = View::new([
            record("c", 5, true, &[("name:room", "")]),
            record("b", 3, true, &[("name:room", "")]),
            record("a", 3, true, &[("name:room", "")]),
        ]);
        let winners: Vec<_> = view
            .holders("room")
            .iter()
            .map(|m| m.identity.name.clone())
            .collect();
        assert_eq!(winners, ["a", "b", "c"]);
        let events = View::default().events_to(&view);
        assert_eq!(
            names(&events),
            ["joined a", "joined b", "joined c", "conflict room -> a"]
        );
        // Told once: the same contenders again say nothing.
        assert!(
            !names(&view.events_to(&view))
                .iter()
                .any(|e| e.starts_with("conflict"))
        );
        // The winner dies: the next one takes the name, and the change is told.
        let after = View::new([
            record("c", 5, true, &[("name:room", "")]),
            record("b", 3, true, &[("name:room", "")]),
            record("a", 3, false, &[("name:room", "")]),
        ]);
        assert_eq!(
            names(&view.events_to(&after)),
            ["unreachable a", "conflict room -> b"]
        );
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
