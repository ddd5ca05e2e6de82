//! A peer that speaks duologue's wire by hand, for tests of what a node does with a
//! stranger or a hostile peer: the frames as hand-written prost messages (as a client
//! written against `docs/protocol.md` would have them), one raw gRPC stream, the proofs'
//! MAC, and a codec that puts any bytes on the wire ([`RawCodec`]).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use tokio::sync::mpsc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Status, Streaming};

use crate::probe::WAIT;

/// Sends and receives raw bytes as gRPC messages, so a test can put anything on the wire
/// (malformed frames, a hostile client).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---- the wire, by hand --------------------------------------------------------------
// The handshake's part of `proto/duologue/v1/session.proto`, written out; its comments
// say what each field means.

/// One frame of a session stream (its handshake kinds only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// Which frame.
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<Kind>,
}

/// The handshake's frames.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// The initiator's greeting.
    #[prost(message, tag = "1")]
    Hello(Hello),
    /// The acceptor's answer: its nonce and its proof.
    #[prost(message, tag = "2")]
    Challenge(Challenge),
    /// The initiator's proof.
    #[prost(message, tag = "3")]
    Proof(Proof),
    /// The acceptor admits the session.
    #[prost(message, tag = "4")]
    Welcome(Welcome),
    /// Either side refuses the session.
    #[prost(message, tag = "5")]
    Refuse(Refuse),
}

/// A node's identity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeId {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its incarnation (16 bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub incarnation: Vec<u8>,
}

/// The initiator's greeting.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// The session (16 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub session_id: Vec<u8>,
    /// The initiating node.
    #[prost(message, optional, tag = "2")]
    pub from: Option<NodeId>,
    /// The actor it talks to.
    #[prost(string, tag = "3")]
    pub target: String,
    /// The protocol version it speaks.
    #[prost(uint32, tag = "4")]
    pub protocol_version: u32,
    /// 32 fresh random bytes.
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    /// The largest payload it accepts (0: 4 MiB).
    #[prost(uint64, tag = "6")]
    pub max_message_bytes: u64,
    /// Set when it resumes a session.
    #[prost(message, optional, tag = "7")]
    pub resume: Option<ResumeRequest>,
    /// Its credit to the acceptor, in messages.
    #[prost(uint64, tag = "8")]
    pub credit_window: u64,
    /// Its credit to the acceptor, in bytes.
    #[prost(uint64, tag = "12")]
    pub credit_window_bytes: u64,
}

/// What a resuming initiator asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumeRequest {
    /// The last sequence number it received.
    #[prost(uint64, tag = "1")]
    pub last_received: u64,
    /// The acceptor incarnation the session was opened with.
    #[prost(bytes = "vec", tag = "2")]
    pub acceptor_incarnation: Vec<u8>,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Challenge {
    /// The accepting node.
    #[prost(message, optional, tag = "1")]
    pub from: Option<NodeId>,
    /// 32 fresh random bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub nonce: Vec<u8>,
    /// Its proof that it knows the secret.
    #[prost(bytes = "vec", tag = "3")]
    pub proof: Vec<u8>,
}

/// The initiator's proof.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Proof {
    /// The MAC ([`mac`]).
    #[prost(bytes = "vec", tag = "1")]
    pub proof: Vec<u8>,
}

/// The acceptor admits the session.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    /// Set when the session was resumed.
    #[prost(message, optional, tag = "1")]
    pub resumed: Option<ResumePoint>,
}

/// Where a resumed session continues.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumePoint {
    /// The last sequence number the acceptor received.
    #[prost(uint64, tag = "1")]
    pub last_received: u64,
}

/// A refusal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refuse {
    /// The typed reason (`RefuseReason` of the proto).
    #[prost(int32, tag = "1")]
    pub reason: i32,
    /// Human-readable detail.
    #[prost(string, tag = "2")]
    pub detail: String,
    /// The protocol the target serves, with a protocol mismatch.
    #[prost(string, tag = "3")]
    pub protocol: String,
}

/// One raw stream to a node: what the stranger writes, and what it reads.
#[derive(Debug)]
pub struct RawStream {
    /// What it writes, one gRPC message each.
    pub tx: mpsc::UnboundedSender<Bytes>,
    /// What it reads.
    pub rx: Streaming<Bytes>,
}

impl RawStream {
    /// Opens a stream to `addr` whose first frame is `first` (the node reads it before it
    /// answers the call).
    pub async fn open(addr: &str, first: Kind) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/duologue.v1.Duologue/Converse");
        let (tx, outbound) = mpsc::unbounded_channel();
        let _ = tx.send(Frame { kind: Some(first) }.encode_to_vec().into());
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(outbound);
        let response =
            tokio::time::timeout(WAIT, grpc.streaming(Request::new(outbound), path, RawCodec))
                .await
                .expect("the node answers the call")
                .expect("the call is accepted");
        Self {
            tx,
            rx: response.into_inner(),
        }
    }

    /// Writes `frame`.
    pub fn send(&self, frame: Kind) {
        let bytes = Frame { kind: Some(frame) }.encode_to_vec();
        let _ = self.tx.send(bytes.into());
    }

    /// Writes `bytes` as one gRPC message, whatever they are.
    pub fn send_raw(&self, bytes: &'static [u8]) {
        let _ = self.tx.send(Bytes::from_static(bytes));
    }

    /// The next frame, which must come within [`WAIT`] and be a known one.
    pub async fn next(&mut self) -> Kind {
        self.next_within(WAIT)
            .await
            .expect("a frame in time")
            .expect("the stream is open, with a known frame")
    }

    /// The next frame: `Ok(None)` once the stream ended (or failed), `Err(())` when the
    /// node said nothing and kept the stream open for `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Kind>, ()> {
        match tokio::time::timeout(wait, self.rx.next()).await {
            Ok(Some(Ok(bytes))) => Ok(Frame::decode(bytes).expect("a frame").kind),
            Ok(_) => Ok(None),
            Err(_) => Err(()),
        }
    }
}

// ---- the protocol's proofs, as a client computes them --------------------------------

/// HMAC-SHA256 keyed with `key` over each field as its u64 big-endian length and bytes.
pub fn mac(key: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for field in fields {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    mac.finalize().into_bytes().to_vec()
}
