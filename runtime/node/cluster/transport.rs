//! chitchat's UDP transport with every datagram authenticated: a 16-byte HMAC tag made
//! with the cluster's gossip key ([`GossipKey`]) is appended to each datagram sent, and
//! a datagram whose tag does not verify is dropped before chitchat sees it (a few log
//! lines per window, the rest counted). A node without the secret can neither join nor
//! inject members, names or heartbeats.
//!
//! chitchat 0.13 keeps its datagram encoding crate-private, so its own UDP socket does
//! the encoding here, on loopback: to send, it sends the envelope to a codec socket of
//! ours, whose bytes we tag and send on the public socket; to receive, a verified
//! datagram's bytes are sent to it, and it decodes them. Two loopback datagrams per
//! gossip message, a few a second.

use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::Context;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};

use crate::auth::{GOSSIP_TAG_LEN, GossipKey};
use crate::log_budget::LogBudget;

/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// How long an envelope may take to come back encoded from chitchat's socket.
const CODEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the authenticated gossip socket on a socket bound beforehand (so that a node
/// asked for port 0 knows the port it advertises).
pub(crate) struct SealedUdp {
    key: GossipKey,
    public: Mutex<Option<tokio::net::UdpSocket>>,
}

impl SealedUdp {
    /// A transport that gossips on `public`, authenticated with `key`.
    pub(crate) fn new(key: GossipKey, public: tokio::net::UdpSocket) -> Self {
        Self {
            key,
            public: Mutex::new(Some(public)),
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
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let codec = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("cannot bind the gossip codec socket")?;
        let inner = UdpSocket::open(loopback).await?;
        Ok(Box::new(SealedSocket {
            key: self.key.clone(),
            inner_addr: inner.local_addr()?,
            codec_addr: codec.local_addr()?,
            public,
            inner,
            codec,
            send_buf: vec![0; MAX_DATAGRAM + GOSSIP_TAG_LEN],
            recv_buf: vec![0; MAX_DATAGRAM + 1],
            pending: None,
            rejected: LogBudget::new(),
        }))
    }
}

struct SealedSocket {
    key: GossipKey,
    public: tokio::net::UdpSocket,
    /// chitchat's own socket, on loopback: the codec.
    inner: UdpSocket,
    inner_addr: SocketAddr,
    /// Exchanges encoded datagrams with `inner`.
    codec: tokio::net::UdpSocket,
    codec_addr: SocketAddr,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    /// Who sent the verified datagram handed to `inner` and not yet decoded. Kept
    /// across calls: chitchat cancels `recv` at every gossip tick.
    pending: Option<SocketAddr>,
    rejected: LogBudget,
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
        // A datagram left by a cancelled send would go to the next peer: drop it.
        while self.codec.try_recv_from(&mut self.send_buf).is_ok() {}
        self.inner.send(self.codec_addr, envelope).await?;
        // Bounded: a datagram lost on loopback must not stall chitchat's gossip loop.
        let encoded = tokio::time::timeout(CODEC_TIMEOUT, async {
            loop {
                let (len, from) = self.codec.recv_from(&mut self.send_buf).await?;
                if from == self.inner_addr {
                    return Ok::<_, std::io::Error>(len);
                }
            }
        });
        let len = encoded.await.context("the gossip codec did not answer")??;
        if len + GOSSIP_TAG_LEN > MAX_DATAGRAM {
            anyhow::bail!(
                "a gossip datagram of {len} bytes leaves no room for its {GOSSIP_TAG_LEN}-byte tag"
            );
        }
        let tag = self.key.tag(&self.send_buf[..len]);
        self.send_buf[len..len + GOSSIP_TAG_LEN].copy_from_slice(&tag);
        let sent = self
            .public
            .send_to(&self.send_buf[..len + GOSSIP_TAG_LEN], to)
            .await
            .context("cannot send a gossip datagram")?;
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            tokio::select! {
                // What was handed to the codec first: it is decoded (or, undecodable,
                // dropped by it) before the next datagram is handed over, so `pending`
                // always names the sender of what it returns.
                biased;
                decoded = self.inner.recv(), if self.pending.is_some() => {
                    let mut outcome = decoded?;
                    let Some(from) = self.pending.take() else { continue };
                    if outcome.from_addr != self.codec_addr {
                        continue;
                    }
                    outcome.from_addr = from;
                    return Ok(outcome);
                }
                received = self.public.recv_from(&mut self.recv_buf) => {
                    let (len, from) = match received {
                        Ok(received) => received,
                        // ICMP errors of earlier sends surface here on some systems.
                        Err(error) if is_transient(&error) => continue,
                        Err(error) => return Err(error).context("gossip socket failed"),
                    };
                    let Some(body_len) = len.checked_sub(GOSSIP_TAG_LEN) else {
                        self.reject(from, len);
                        continue;
                    };
                    let (body, tag) = self.recv_buf[..len].split_at(body_len);
                    if !self.key.verify(body, tag) {
                        self.reject(from, len);
                        continue;
                    }
                    // No await between taking the datagram and handing it over: a
                    // cancelled call loses nothing. A full codec queue drops it, as a
                    // network may.
                    if self.codec.try_send_to(body, self.inner_addr).is_ok() {
                        self.pending = Some(from);
                    }
                }
            }
        }
    }
}

impl SealedSocket {
    fn reject(&self, from: SocketAddr, len: usize) {
        self.rejected.log(|unreported| {
            tracing::warn!(
                %from, len, not_logged_since_last_line = unreported,
                "dropped a gossip datagram that is not tagged with this cluster's key \
                 (another cluster, another secret, or forged)"
            );
        });
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;
    use crate::auth::Secret;

    fn key(cluster: &str) -> GossipKey {
        GossipKey::new(
            &Secret::new("gossip test secret of 32 bytes!!").unwrap(),
            cluster,
        )
    }

    async fn socket(key: GossipKey) -> Box<dyn Socket> {
        let public = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        SealedUdp::new(key, public).open(addr).await.unwrap()
    }

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn recv(socket: &mut Box<dyn Socket>) -> RecvOutcome {
        tokio::time::timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("nothing received")
            .unwrap()
    }

    #[tokio::test]
    async fn tagged_datagrams_arrive_from_their_sender_and_others_are_dropped() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        let mut stranger = socket(key("another cluster")).await;
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b_addr = b.local_addr().unwrap();

        // Forged or foreign first: untagged junk, a short datagram, another cluster's
        // key, and a correctly tagged datagram that does not decode.
        raw.send_to(b"junk that is long enough to have a tag", b_addr)
            .await
            .unwrap();
        raw.send_to(b"short", b_addr).await.unwrap();
        stranger.send(b_addr, envelope()).await.unwrap();
        let mut undecodable = b"not a chitchat envelope".to_vec();
        undecodable.extend(key("c").tag(&undecodable));
        raw.send_to(&undecodable, b_addr).await.unwrap();
        // Then the real one: it arrives, from its sender, and nothing else did.
        a.send(b_addr, envelope()).await.unwrap();
        let outcome = recv(&mut b).await;
        assert_eq!(outcome.from_addr, a.local_addr().unwrap());
        assert_eq!(outcome.envelope, envelope());
        // And the answer goes back the same way.
        b.send(a.local_addr().unwrap(), envelope()).await.unwrap();
        assert_eq!(recv(&mut a).await.from_addr, b_addr);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), b.recv())
                .await
                .is_err(),
            "a dropped datagram arrived"
        );
    }

    #[tokio::test]
    async fn a_cancelled_receive_loses_nothing() {
        let mut a = socket(key("c")).await;
        let mut b = socket(key("c")).await;
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut got = 0;
        for _ in 0..50 {
            a.send(b_addr, envelope()).await.unwrap();
            // Cancelled as chitchat's gossip tick cancels it, at whatever point.
            if let Ok(outcome) = tokio::time::timeout(Duration::from_micros(1), b.recv()).await {
                assert_eq!(outcome.unwrap().from_addr, a_addr);
                got += 1;
            }
        }
        while let Ok(outcome) = tokio::time::timeout(Duration::from_millis(300), b.recv()).await {
            assert_eq!(outcome.unwrap().from_addr, a_addr);
            got += 1;
        }
        assert_eq!(got, 50, "a datagram was lost or doubled");
    }
}
