//! chitchat's transport on the node's one gossip socket, every datagram checked before
//! anything decodes it: a node without the cluster's key can neither join nor inject
//! members, names or heartbeats, and a datagram captured on the way and sent again
//! (from anywhere, to any node) is not heard and draws no reply larger than itself.
//!
//! A datagram is a header, chitchat's envelope and a tag:
//!
//! ```text
//! offset  bytes
//!      0      1  version: 1
//!      1      8  sent: the sender's clock, milliseconds since the Unix epoch (big-endian),
//!                one past the last datagram's if that is later (by at most 1 s)
//!      9      8  echo: the cookie the receiver gave the sender's address (zeros: none yet)
//!     17      8  cookie: the sender's cookie for the receiver's address, to echo back
//!     25      n  body: chitchat's envelope (`ChitchatEnvelope::serialize`); empty in a
//!                challenge
//!   25+n     16  tag: HMAC-SHA256 with the gossip key over a label, the header and the
//!                body, truncated ([`GossipKey::tag`])
//! ```
//!
//! What a node does with a datagram, in this order (cheap checks first; every drop is
//! counted, and logged within a [`LogBudget`]):
//! 1. shorter than a header and a tag, or of another version: dropped (unauthentic);
//! 2. `sent` more than [`FRESHNESS`] away from this node's clock, or not after what the
//!    replay cache had to forget when full: dropped (stale);
//! 3. the same `sent` and tag seen before ([`Replays`]): dropped (replayed);
//! 4. a tag that does not verify: dropped (unauthentic);
//! 5. an echo that is not this node's cookie for the address the datagram came from
//!    (first contact, a restart, or a datagram replayed from elsewhere or to another
//!    node): not heard; unless it is itself a challenge, it is answered with a
//!    **challenge**, a datagram with an empty body carrying this node's cookie for that
//!    address, smaller than what it answers. The sender keeps the cookie and sends the
//!    Syn the challenge answered again at once: a first contact costs a round trip;
//! 6. otherwise the sender's cookie is kept for replies, and the body (if any) decoded
//!    and handed to chitchat; one that does not decode is dropped (undecodable).
//!
//! So chitchat hears only datagrams made with the key, made within [`FRESHNESS`], never
//! twice, and from an address that has received this node's cookie there: what it
//! answers (a delta can be 64 KB for a 100-byte request) goes only to a sender that has
//! proven it receives where it sends from. The cookie binds the address the receiver
//! sees, not one the sender claims, so gossip crosses a NAT or a load-balanced seed
//! address as long as a peer's replies come from the address it was sent to.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage};

use crate::auth::{GOSSIP_COOKIE_LEN, GOSSIP_TAG_LEN, GossipCookies, GossipKey};
use crate::log_budget::LogBudget;
use crate::sync::lock;

/// The datagram format's version, its first byte.
const VERSION: u8 = 1;

/// Bytes before the body: version, sent, echo, cookie.
const HEADER_LEN: usize = 1 + 8 + 2 * GOSSIP_COOKIE_LEN;

/// What the transport adds to chitchat's envelope.
const OVERHEAD: usize = HEADER_LEN + GOSSIP_TAG_LEN;

// chitchat fills its deltas short of the UDP limit by this much (the vendored copy's one
// change beyond visibility): a full delta still fits once sealed.
const _: () = assert!(OVERHEAD <= chitchat::TRANSPORT_OVERHEAD);

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// How far a datagram's `sent` may be from the receiver's clock, either way: the clocks
/// of a cluster's nodes must agree within it (NTP keeps them within milliseconds), and a
/// datagram captured on the way is worthless after it.
const FRESHNESS: Duration = Duration::from_secs(30);

/// The most datagrams the replay cache remembers: past it, the oldest are forgotten and
/// anything sent before them refused, so the cache stays bounded (about 2 MB) at any
/// rate. A node of a large cluster gossiping every second receives tens a second, so
/// the cache holds the whole window at rates a thousand times that.
const REPLAY_CAPACITY: usize = 65_536;

/// The most peer addresses whose cookies are kept (the oldest are forgotten first).
const PEER_CAPACITY: usize = 16_384;

/// How many of the last Syns sent are kept, to be sent again at once when their peer
/// answers with a challenge (instead of a gossip round later), and for how long.
const RECENT_SYNS: usize = 16;
const RESEND_WITHIN: Duration = Duration::from_secs(2);

/// chitchat's envelopes start with its magic number (45 139, little-endian): a datagram
/// that starts with it has no header, from a node of a duologue before the header.
const CHITCHAT_MAGIC: [u8; 2] = 45_139u16.to_le_bytes();

/// The transport of a node's gossip, on a socket bound beforehand (so that a node asked
/// for port 0 knows the port it advertises): every datagram sealed and checked with
/// `key`.
pub(crate) struct SealedUdp {
    key: GossipKey,
    public: Mutex<Option<tokio::net::UdpSocket>>,
    traffic: Arc<GossipTraffic>,
}

/// The bytes of gossip datagrams a node sent and received, and what its peers say they
/// have of its own state.
#[derive(Debug, Default)]
pub(crate) struct GossipTraffic {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    /// The node's own id, once known: the digests peers send are read for it.
    me: std::sync::OnceLock<chitchat::ChitchatId>,
    /// By peer gossip address: the newest version of this node's state the peer said
    /// (in a Syn's or SynAck's digest) it has.
    heard: Mutex<HashMap<SocketAddr, chitchat::Version>>,
    /// Told whenever a peer says it has a newer version.
    heard_more: tokio::sync::Notify,
}

impl GossipTraffic {
    /// Traffic of the node `me`.
    pub(crate) fn of(me: chitchat::ChitchatId) -> Self {
        let traffic = Self::default();
        let _ = traffic.me.set(me);
        traffic
    }

    /// Whether the peer at `addr` said it has version `version` of this node's state.
    pub(crate) fn has(&self, addr: SocketAddr, version: chitchat::Version) -> bool {
        lock(&self.heard)
            .get(&normalized(addr))
            .is_some_and(|heard| *heard >= version)
    }

    /// Resolves when a peer next says it has a newer version of this node's state.
    pub(crate) fn heard_more(&self) -> tokio::sync::futures::Notified<'_> {
        self.heard_more.notified()
    }

    /// Reads what `message`, from `from`, says the sender has of this node's state.
    fn read(&self, from: SocketAddr, message: &ChitchatMessage) {
        let (
            Some(me),
            ChitchatMessage::Syn { digest, .. } | ChitchatMessage::SynAck { digest, .. },
        ) = (self.me.get(), message)
        else {
            return;
        };
        let Some(version) = digest.max_version_of(me) else {
            return;
        };
        let mut heard = lock(&self.heard);
        let known = heard.entry(normalized(from)).or_default();
        if version > *known {
            *known = version;
            drop(heard);
            self.heard_more.notify_waiters();
        }
    }
}

impl SealedUdp {
    /// A transport that gossips on `public`, authenticated with `key`, counting its
    /// datagrams' bytes in `traffic`.
    pub(crate) fn new(
        key: GossipKey,
        public: tokio::net::UdpSocket,
        traffic: Arc<GossipTraffic>,
    ) -> Self {
        Self {
            key,
            public: Mutex::new(Some(public)),
            traffic,
        }
    }
}

#[async_trait::async_trait]
impl Transport for SealedUdp {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = self
            .public
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .context("the gossip socket was opened already")?;
        Ok(Box::new(SealedSocket::new(
            self.key.clone(),
            public,
            self.traffic.clone(),
        )))
    }
}

/// The gossip socket: the only one; chitchat sees envelopes, never bytes.
struct SealedSocket {
    key: GossipKey,
    /// This node's cookies for its peers' addresses.
    cookies: GossipCookies,
    public: tokio::net::UdpSocket,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    replays: Replays,
    /// The cookies peers gave this node, by their address.
    peers: Peers,
    drops: Drops,
    /// The `sent` of the last datagram sent: each is later than the one before, so that
    /// no two are alike (the same envelope sent twice within a millisecond would
    /// otherwise be dropped as a replay).
    last_sent: u64,
    /// The last Syns sent (to whom, when, the envelope's bytes): a first contact is
    /// answered with a challenge, and the Syn it answered goes again with the cookie at
    /// once, so that it costs a round trip, not a gossip round.
    recent_syns: VecDeque<(SocketAddr, Instant, Vec<u8>)>,
    traffic: Arc<GossipTraffic>,
}

/// Why datagrams were not heard: each reason counted, and logged within a budget.
#[derive(Default)]
struct Drops {
    /// Too short, another version, or a tag that does not verify.
    unauthentic: LogBudget,
    /// Sent too long ago or too far ahead, by this node's clock.
    stale: LogBudget,
    /// Seen before.
    replayed: LogBudget,
    /// From an address that has not echoed its cookie: answered with a challenge (a
    /// challenge itself is not answered).
    unproven: LogBudget,
    /// Authentic, but chitchat's envelope does not decode.
    undecodable: LogBudget,
}

impl SealedSocket {
    fn new(key: GossipKey, public: tokio::net::UdpSocket, traffic: Arc<GossipTraffic>) -> Self {
        Self {
            traffic,
            key,
            cookies: GossipCookies::random(),
            public,
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            // Room for the largest UDP payload over IPv6 too: nothing is cut short.
            recv_buf: vec![0; usize::from(u16::MAX)].into_boxed_slice(),
            replays: Replays::new(REPLAY_CAPACITY),
            peers: Peers::default(),
            drops: Drops::default(),
            last_sent: 0,
            recent_syns: VecDeque::with_capacity(RECENT_SYNS),
        }
    }

    /// The `sent` of a datagram sent now: this node's clock, or just past the last one
    /// (unless the clock went back by more than a second: then the clock, so that a
    /// clock set back is not left ahead of every peer's).
    fn next_sent(&mut self) -> u64 {
        let now = now_ms();
        self.last_sent = if now > self.last_sent || self.last_sent - now > 1_000 {
            now
        } else {
            self.last_sent + 1
        };
        self.last_sent
    }

    /// What to hand chitchat of the `len` bytes received from `from`, if anything.
    /// Synchronous: nothing awaits between taking a datagram and deciding.
    fn open_datagram(&mut self, len: usize, from: SocketAddr) -> Option<RecvOutcome> {
        let now = now_ms();
        let datagram = &self.recv_buf[..len];
        let Some(signed_len) = len
            .checked_sub(GOSSIP_TAG_LEN)
            .filter(|&signed| signed >= HEADER_LEN)
        else {
            self.drops
                .drop_unauthentic(from, len, "shorter than a header and a tag");
            return None;
        };
        let (signed, tag) = datagram.split_at(signed_len);
        let header = Header::read(signed);
        if header.version != VERSION {
            let why = if datagram.starts_with(&CHITCHAT_MAGIC) {
                "no header: from a node of an older duologue, or forged"
            } else {
                "unknown version"
            };
            self.drops.drop_unauthentic(from, len, why);
            return None;
        }
        let skew = i128::from(header.sent) - i128::from(now);
        if skew.unsigned_abs() > FRESHNESS.as_millis() || header.sent <= self.replays.floor {
            let skew_ms = i64::try_from(skew).unwrap_or(i64::MAX);
            self.drops.stale.log(|unreported| {
                tracing::warn!(
                    %from, len, skew_ms, not_logged_since_last_line = unreported,
                    "dropped a gossip datagram sent too long ago or too far ahead by this \
                     node's clock (a clock off by more than {FRESHNESS:?}, or replayed late)"
                );
            });
            return None;
        }
        let tag: [u8; GOSSIP_TAG_LEN] = tag.try_into().expect("split at the tag's length");
        if self.replays.contains(header.sent, &tag) {
            self.drops.replayed.log(|unreported| {
                tracing::warn!(
                    %from, len, not_logged_since_last_line = unreported,
                    "dropped a gossip datagram received before (replayed, or duplicated \
                     by the network)"
                );
            });
            return None;
        }
        if !self.key.verify(signed, &tag) {
            self.drops
                .drop_unauthentic(from, len, "its tag does not verify");
            return None;
        }
        self.replays.remember(header.sent, tag, now);
        let body = &signed[HEADER_LEN..];
        let peer = normalized(from);
        if !self.cookies.verify(peer, &header.echo) {
            // Not a challenge for a challenge: two nodes cannot keep each other busy.
            let challenged = !body.is_empty();
            if challenged {
                self.challenge(from, header.cookie);
            }
            self.drops.unproven.log(|unreported| {
                tracing::debug!(
                    %from, len, challenged, not_logged_since_last_line = unreported,
                    "did not hear a gossip datagram from an address that has not shown it \
                     receives there (first contact, a restart, or a datagram replayed from \
                     elsewhere or to another node)"
                );
            });
            return None;
        }
        self.peers.remember(peer, header.cookie);
        if body.is_empty() {
            // A challenge to a datagram of this node's: from now on what goes to `from`
            // echoes its cookie, starting with the Syn it answered.
            self.resend_syn(from);
            return None;
        }
        let mut rest = body;
        match ChitchatEnvelope::deserialize(&mut rest) {
            Ok(envelope) if rest.is_empty() => {
                self.traffic.read(from, &envelope.message);
                Some(RecvOutcome {
                    from_addr: from,
                    envelope,
                    num_bytes_received: len,
                })
            }
            Ok(_) => {
                self.drops
                    .drop_undecodable(from, len, "bytes left after the envelope");
                None
            }
            Err(error) => {
                self.drops
                    .drop_undecodable(from, len, &format!("{error:#}"));
                None
            }
        }
    }

    /// Sends the last Syn sent to `to` again (sealed anew, echoing the cookie `to` just
    /// gave), if it was sent within [`RESEND_WITHIN`]. Never waits, as [`Self::challenge`].
    fn resend_syn(&mut self, to: SocketAddr) {
        let peer = normalized(to);
        let Some(at) = self
            .recent_syns
            .iter()
            .rposition(|(addr, at, _)| normalized(*addr) == peer && at.elapsed() < RESEND_WITHIN)
        else {
            return;
        };
        let Some((_, _, body)) = self.recent_syns.remove(at) else {
            return;
        };
        self.send_buf.clear();
        self.send_buf.resize(HEADER_LEN, 0);
        self.send_buf.extend_from_slice(&body);
        self.seal(to);
        if let Ok(sent) = self.public.try_send_to(&self.send_buf, to) {
            self.traffic.sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
    }

    /// Writes the header of the datagram in `send_buf` (an envelope after
    /// [`HEADER_LEN`] bytes) for `to`, and appends its tag.
    fn seal(&mut self, to: SocketAddr) {
        let peer = normalized(to);
        Header {
            version: VERSION,
            sent: self.next_sent(),
            echo: self.peers.cookie(peer),
            cookie: self.cookies.of(peer),
        }
        .write(&mut self.send_buf[..HEADER_LEN]);
        let tag = self.key.tag(&self.send_buf);
        self.send_buf.extend_from_slice(&tag);
    }

    /// Keeps the Syn in `send_buf` (after its header), sent to `to`, for
    /// [`Self::resend_syn`].
    fn keep_syn(&mut self, to: SocketAddr) {
        let mut kept = if self.recent_syns.len() >= RECENT_SYNS {
            self.recent_syns
                .pop_front()
                .map(|(_, _, b)| b)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        kept.clear();
        kept.extend_from_slice(&self.send_buf[HEADER_LEN..]);
        self.recent_syns.push_back((to, Instant::now(), kept));
    }

    /// Sends `to` a challenge: a datagram with no body, carrying this node's cookie for
    /// `to` and echoing `their_cookie`. Never waits: a full socket buffer drops it, and
    /// the sender's next round asks again.
    fn challenge(&mut self, to: SocketAddr, their_cookie: [u8; GOSSIP_COOKIE_LEN]) {
        let mut datagram = [0; OVERHEAD];
        Header {
            version: VERSION,
            sent: self.next_sent(),
            echo: their_cookie,
            cookie: self.cookies.of(normalized(to)),
        }
        .write(&mut datagram[..HEADER_LEN]);
        let tag = self.key.tag(&datagram[..HEADER_LEN]);
        datagram[HEADER_LEN..].copy_from_slice(&tag);
        if let Ok(sent) = self.public.try_send_to(&datagram, to) {
            self.traffic.sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
    }
}

#[async_trait::async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public
            .local_addr()
            .context("cannot read the gossip address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.send_buf.clear();
        self.send_buf.resize(HEADER_LEN, 0);
        envelope.serialize(&mut self.send_buf);
        let body_len = self.send_buf.len() - HEADER_LEN;
        if self.send_buf.len() + GOSSIP_TAG_LEN > MAX_DATAGRAM {
            anyhow::bail!(
                "a gossip envelope of {body_len} bytes leaves no room for the datagram's \
                 {OVERHEAD}-byte header and tag"
            );
        }
        if matches!(envelope.message, ChitchatMessage::Syn { .. }) {
            self.keep_syn(to);
        }
        self.seal(to);
        let sent = self
            .public
            .send_to(&self.send_buf, to)
            .await
            .context("cannot send a gossip datagram")?;
        self.traffic.sent.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (len, from) = match self.public.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                // ICMP errors of earlier sends surface here on some systems.
                Err(error) if is_transient(&error) => continue,
                Err(error) => return Err(error).context("gossip socket failed"),
            };
            self.traffic
                .received
                .fetch_add(len as u64, Ordering::Relaxed);
            // No await from here on: chitchat cancelling `recv` at every gossip tick
            // loses nothing.
            if let Some(outcome) = self.open_datagram(len, from) {
                return Ok(outcome);
            }
        }
    }
}

impl Drop for SealedSocket {
    fn drop(&mut self) {
        let level = tracing::Level::WARN;
        let source = "gossip";
        let drops = &self.drops;
        drops
            .unauthentic
            .report_unreported(level, source, "unauthentic gossip datagram");
        drops
            .stale
            .report_unreported(level, source, "stale gossip datagram");
        drops
            .replayed
            .report_unreported(level, source, "replayed gossip datagram");
        drops
            .undecodable
            .report_unreported(level, source, "undecodable gossip datagram");
        drops.unproven.report_unreported(
            tracing::Level::DEBUG,
            source,
            "gossip datagram from an address not shown to receive there",
        );
    }
}

impl Drops {
    fn drop_unauthentic(&self, from: SocketAddr, len: usize, why: &str) {
        self.unauthentic.log(|unreported| {
            tracing::warn!(
                %from, len, why, not_logged_since_last_line = unreported,
                "dropped a gossip datagram that is not tagged with this cluster's key \
                 (another cluster, another secret, or forged)"
            );
        });
    }

    fn drop_undecodable(&self, from: SocketAddr, len: usize, error: &str) {
        self.undecodable.log(|unreported| {
            tracing::warn!(
                %from, len, error, not_logged_since_last_line = unreported,
                "dropped an authentic gossip datagram whose envelope does not decode \
                 (a node of another chitchat version?)"
            );
        });
    }
}

/// A datagram's header.
#[derive(Debug, PartialEq)]
struct Header {
    version: u8,
    sent: u64,
    echo: [u8; GOSSIP_COOKIE_LEN],
    cookie: [u8; GOSSIP_COOKIE_LEN],
}

impl Header {
    /// The header at the start of `signed` (at least [`HEADER_LEN`] bytes).
    fn read(signed: &[u8]) -> Self {
        let field = |at: usize| -> [u8; GOSSIP_COOKIE_LEN] {
            signed[at..at + GOSSIP_COOKIE_LEN]
                .try_into()
                .expect("a field of the header")
        };
        Self {
            version: signed[0],
            sent: u64::from_be_bytes(field(1)),
            echo: field(9),
            cookie: field(9 + GOSSIP_COOKIE_LEN),
        }
    }

    /// Writes it into `out` ([`HEADER_LEN`] bytes).
    fn write(&self, out: &mut [u8]) {
        out[0] = self.version;
        out[1..9].copy_from_slice(&self.sent.to_be_bytes());
        out[9..9 + GOSSIP_COOKIE_LEN].copy_from_slice(&self.echo);
        out[9 + GOSSIP_COOKIE_LEN..HEADER_LEN].copy_from_slice(&self.cookie);
    }
}

/// The authentic datagrams received within the freshness window, by the time they were
/// sent and their tag: a datagram seen twice is a replay (or a network's duplicate).
/// Bounded: past its capacity the oldest are forgotten, and `floor` (the latest `sent`
/// forgotten that way) refuses anything sent at or before it.
struct Replays {
    seen: BTreeSet<(u64, [u8; GOSSIP_TAG_LEN])>,
    capacity: usize,
    floor: u64,
}

impl Replays {
    fn new(capacity: usize) -> Self {
        Self {
            seen: BTreeSet::new(),
            capacity,
            floor: 0,
        }
    }

    fn contains(&self, sent: u64, tag: &[u8; GOSSIP_TAG_LEN]) -> bool {
        self.seen.contains(&(sent, *tag))
    }

    /// Remembers a datagram sent at `sent` with `tag`, received at `now`.
    fn remember(&mut self, sent: u64, tag: [u8; GOSSIP_TAG_LEN], now: u64) {
        // What the freshness check refuses anyway need not be remembered.
        let horizon = now.saturating_sub(FRESHNESS.as_millis() as u64);
        while self.seen.first().is_some_and(|&(at, _)| at < horizon) {
            self.seen.pop_first();
        }
        if self.seen.len() >= self.capacity
            && let Some((at, _)) = self.seen.pop_first()
        {
            self.floor = self.floor.max(at);
        }
        self.seen.insert((sent, tag));
    }
}

/// The cookies peers gave this node, by the peer's address (normalized).
#[derive(Default)]
struct Peers {
    cookies: HashMap<SocketAddr, ([u8; GOSSIP_COOKIE_LEN], Instant)>,
}

impl Peers {
    /// The cookie to echo to `peer`: zeros (which no cookie is but by a 2^-64 chance)
    /// before it gave one.
    fn cookie(&self, peer: SocketAddr) -> [u8; GOSSIP_COOKIE_LEN] {
        self.cookies
            .get(&peer)
            .map_or([0; GOSSIP_COOKIE_LEN], |c| c.0)
    }

    fn remember(&mut self, peer: SocketAddr, cookie: [u8; GOSSIP_COOKIE_LEN]) {
        if self.cookies.len() >= PEER_CAPACITY && !self.cookies.contains_key(&peer) {
            let oldest = self
                .cookies
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.cookies.remove(&oldest);
            }
        }
        self.cookies.insert(peer, (cookie, Instant::now()));
    }
}

/// `addr` with an IPv4-mapped IPv6 address as its IPv4 address: a dual-stack socket sees
/// an IPv4 peer as the mapped address, which is the same peer.
fn normalized(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// This node's clock: milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use chitchat::ProtocolVersion;

    use super::*;
    use crate::auth::Secret;

    fn key(cluster: &str) -> GossipKey {
        GossipKey::new(
            &Secret::new("gossip test secret of 32 bytes!!").unwrap(),
            cluster,
        )
    }

    async fn socket(key: GossipKey) -> SealedSocket {
        let public = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        SealedSocket::new(key, public, Arc::default())
    }

    fn addr(socket: &SealedSocket) -> SocketAddr {
        socket.public.local_addr().unwrap()
    }

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    /// What `socket` hears within `within`, if anything.
    async fn heard(socket: &mut SealedSocket, within: Duration) -> Option<RecvOutcome> {
        tokio::time::timeout(within, socket.recv())
            .await
            .ok()
            .map(Result::unwrap)
    }

    /// What `socket` hears within 5 s.
    async fn recv(socket: &mut SealedSocket) -> RecvOutcome {
        heard(socket, Duration::from_secs(5))
            .await
            .expect("nothing heard")
    }

    /// Lets `socket` read what it was sent (challenges, drops) for a moment, and says
    /// that none of it was heard.
    async fn nothing_heard(socket: &mut SealedSocket) {
        let got = heard(socket, Duration::from_millis(200)).await;
        assert!(got.is_none(), "heard {got:?}");
    }

    /// A datagram as `key` seals it: `sent`, `echo`, `cookie`, `body`.
    fn sealed(key: &GossipKey, sent: u64, echo: [u8; 8], body: &[u8]) -> Vec<u8> {
        let mut datagram = vec![0; HEADER_LEN];
        Header {
            version: VERSION,
            sent,
            echo,
            cookie: [7; 8],
        }
        .write(&mut datagram);
        datagram.extend_from_slice(body);
        let tag = key.tag(&datagram);
        datagram.extend_from_slice(&tag);
        datagram
    }

    fn body() -> Vec<u8> {
        let mut body = Vec::new();
        envelope().serialize(&mut body);
        body
    }

    /// `a` and `b` gossip once each way, so that each holds the other's cookie.
    async fn introduce(a: &mut SealedSocket, b: &mut SealedSocket) {
        a.send(addr(b), envelope()).await.unwrap();
        nothing_heard(b).await; // a's first datagram: challenged
        nothing_heard(a).await; // the challenge: a keeps b's cookie
        a.send(addr(b), envelope()).await.unwrap();
        assert_eq!(recv(b).await.from_addr, addr(a));
        b.send(addr(a), envelope()).await.unwrap();
        assert_eq!(recv(a).await.from_addr, addr(b));
    }

    #[tokio::test]
    async fn a_first_datagram_is_challenged_then_both_ways_are_heard() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        a.send(addr(&b), envelope()).await.unwrap();
        nothing_heard(&mut b).await;
        assert_eq!(b.drops.unproven.counted(), 1);
        nothing_heard(&mut a).await;
        assert_eq!(a.peers.cookie(addr(&b)), b.cookies.of(addr(&a)));
        a.send(addr(&b), envelope()).await.unwrap();
        let outcome = recv(&mut b).await;
        assert_eq!(outcome.from_addr, addr(&a));
        assert_eq!(outcome.envelope, envelope());
        // The answer goes back at once: b kept a's cookie.
        b.send(addr(&a), envelope()).await.unwrap();
        assert_eq!(recv(&mut a).await.from_addr, addr(&b));
        assert_eq!(a.drops.unproven.counted(), 0);
    }

    #[tokio::test]
    async fn a_challenged_syn_goes_again_at_once() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        // A Syn of cluster "c" with an empty digest (chitchat's `Digest` has no public
        // constructor): magic, version 0, type Syn, no nodes, the cluster id.
        let syn = || {
            let wire = [0x53, 0xb0, 0, 0, 0, 0, 1, 0, b'c'];
            ChitchatEnvelope::deserialize(&mut &wire[..]).unwrap()
        };
        assert!(matches!(syn().message, ChitchatMessage::Syn { .. }));
        a.send(addr(&b), syn()).await.unwrap();
        nothing_heard(&mut b).await; // challenged
        nothing_heard(&mut a).await; // the challenge: the Syn goes again
        let outcome = recv(&mut b).await;
        assert_eq!((outcome.from_addr, outcome.envelope), (addr(&a), syn()));
        assert_eq!(b.drops.unproven.counted(), 1);
        // Once only.
        nothing_heard(&mut a).await;
        nothing_heard(&mut b).await;
    }

    #[tokio::test]
    async fn forged_foreign_and_undecodable_datagrams_are_dropped_and_counted() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        let mut stranger = socket(key("another cluster")).await;
        introduce(&mut a, &mut b).await;
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let raw_addr = raw.local_addr().unwrap();
        let b_addr = addr(&b);
        let echo = b.cookies.of(raw_addr);

        // Junk, short, the old format (an envelope and a tag), another cluster's key, a
        // tag cut off, and authentic bodies that do not decode.
        raw.send_to(&[0x55; 200], b_addr).await.unwrap();
        raw.send_to(b"short", b_addr).await.unwrap();
        let mut old = body();
        old.extend(key("c").tag(&old));
        raw.send_to(&old, b_addr).await.unwrap();
        stranger.send(b_addr, envelope()).await.unwrap();
        let genuine = sealed(&key("c"), now_ms(), echo, &body());
        raw.send_to(&genuine[..genuine.len() - GOSSIP_TAG_LEN], b_addr)
            .await
            .unwrap();
        raw.send_to(
            &sealed(&key("c"), now_ms(), echo, b"not an envelope"),
            b_addr,
        )
        .await
        .unwrap();
        let mut trailing = body();
        trailing.push(0);
        raw.send_to(&sealed(&key("c"), now_ms(), echo, &trailing), b_addr)
            .await
            .unwrap();
        nothing_heard(&mut b).await;
        assert_eq!(b.drops.unauthentic.counted(), 5);
        assert_eq!(b.drops.undecodable.counted(), 2);
        // The stranger got nothing back: no challenge for what is not authentic.
        assert!(
            heard(&mut stranger, Duration::from_millis(100))
                .await
                .is_none()
        );
        assert_eq!(stranger.drops.unproven.counted(), 0);
        // The cluster's own datagrams are still heard.
        a.send(b_addr, envelope()).await.unwrap();
        assert_eq!(recv(&mut b).await.from_addr, addr(&a));
    }

    #[tokio::test]
    async fn a_replayed_datagram_is_not_heard_and_draws_nothing_larger_than_itself() {
        let mut b = socket(key("c")).await;
        let b_addr = addr(&b);
        let origin = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A datagram from `origin`, echoing b's cookie for it: heard once.
        let echo = b.cookies.of(origin.local_addr().unwrap());
        let datagram = sealed(&key("c"), now_ms(), echo, &body());
        origin.send_to(&datagram, b_addr).await.unwrap();
        assert_eq!(recv(&mut b).await.from_addr, origin.local_addr().unwrap());
        // Again, from the same address or another: dropped, nothing sent back.
        origin.send_to(&datagram, b_addr).await.unwrap();
        elsewhere.send_to(&datagram, b_addr).await.unwrap();
        nothing_heard(&mut b).await;
        assert_eq!(b.drops.replayed.counted(), 2);
        // Captured before it arrived, and sent from elsewhere first: not heard (the echo
        // is for `origin`); the challenge it draws is smaller than it.
        let captured = sealed(&key("c"), now_ms(), echo, &body());
        elsewhere.send_to(&captured, b_addr).await.unwrap();
        nothing_heard(&mut b).await;
        let mut back = [0; 1024];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), elsewhere.recv_from(&mut back))
            .await
            .expect("a challenge")
            .unwrap();
        assert_eq!(len, OVERHEAD);
        assert!(len < captured.len());
        // And the original, arriving after, is a replay.
        origin.send_to(&captured, b_addr).await.unwrap();
        nothing_heard(&mut b).await;
        assert_eq!(b.drops.replayed.counted(), 3);
        assert_eq!(b.drops.unproven.counted(), 1);
    }

    #[tokio::test]
    async fn datagrams_outside_the_freshness_window_are_dropped() {
        let mut b = socket(key("c")).await;
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let raw_addr = raw.local_addr().unwrap();
        let echo = b.cookies.of(raw_addr);
        let window = FRESHNESS.as_millis() as u64;
        let b_addr = addr(&b);
        for sent in [now_ms() - window - 1_000, now_ms() + window + 1_000] {
            raw.send_to(&sealed(&key("c"), sent, echo, &body()), b_addr)
                .await
                .unwrap();
        }
        nothing_heard(&mut b).await;
        assert_eq!(b.drops.stale.counted(), 2);
        // Skewed within the window: heard.
        for sent in [now_ms() - window + 2_000, now_ms() + window - 2_000] {
            raw.send_to(&sealed(&key("c"), sent, echo, &body()), b_addr)
                .await
                .unwrap();
            assert_eq!(recv(&mut b).await.from_addr, raw_addr);
        }
    }

    #[tokio::test]
    async fn a_challenge_is_never_answered_with_a_challenge() {
        let mut a = socket(key("c")).await;
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A challenge whose echo is wrong (a's cookie was for another address).
        raw.send_to(&sealed(&key("c"), now_ms(), [1; 8], &[]), addr(&a))
            .await
            .unwrap();
        nothing_heard(&mut a).await;
        let mut back = [0; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), raw.recv_from(&mut back))
                .await
                .is_err()
        );
        // Counted, not answered.
        assert_eq!(a.drops.unproven.counted(), 1);
    }

    #[test]
    fn the_replay_cache_is_bounded_and_refuses_what_it_forgot() {
        let mut replays = Replays::new(3);
        let now = 1_000_000;
        for (i, sent) in [now - 10, now - 5, now - 1, now].into_iter().enumerate() {
            replays.remember(sent, [i as u8; GOSSIP_TAG_LEN], now);
        }
        assert_eq!(replays.seen.len(), 3);
        // The oldest went, and anything sent at or before it is refused from now on.
        assert_eq!(replays.floor, now - 10);
        assert!(replays.contains(now, &[3; GOSSIP_TAG_LEN]));
        assert!(!replays.contains(now - 10, &[0; GOSSIP_TAG_LEN]));
        // What the freshness window refuses is forgotten as time passes.
        let later = now - 3 + FRESHNESS.as_millis() as u64;
        replays.remember(later, [9; GOSSIP_TAG_LEN], later);
        assert_eq!(replays.seen.len(), 3, "{:?}", replays.seen);
        assert!(!replays.contains(now - 5, &[1; GOSSIP_TAG_LEN]));
        assert!(replays.contains(now - 1, &[2; GOSSIP_TAG_LEN]));
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        introduce(&mut a, &mut b).await;
        let (a_addr, b_addr) = (addr(&a), addr(&b));
        let mut got = 0;
        for _ in 0..50 {
            a.send(b_addr, envelope()).await.unwrap();
            // Cancelled as chitchat's gossip tick cancels it, at whatever point.
            if let Ok(outcome) = tokio::time::timeout(Duration::from_micros(1), b.recv()).await {
                assert_eq!(outcome.unwrap().from_addr, a_addr);
                got += 1;
            }
        }
        while let Some(outcome) = heard(&mut b, Duration::from_millis(300)).await {
            assert_eq!(outcome.from_addr, a_addr);
            got += 1;
        }
        assert_eq!(got, 50, "a datagram was lost or doubled");
    }
}
