//! A peer that speaks duologue's wire by hand, for tests of what a node does with a
//! stranger or a hostile peer (`tests/hostile_resume.rs`, `tests/budgets.rs`): the frames
//! as hand-written prost messages (as a client written against `docs/protocol.md` would
//! have them), one raw gRPC stream, and the proofs' MAC.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use tokio::sync::mpsc;
use tonic::{Request, Streaming};

use crate::support::{RawCodec, WAIT};

// ---- the wire, by hand --------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    Hello(Hello),
    #[prost(message, tag = "2")]
    Challenge(Challenge),
    #[prost(message, tag = "3")]
    Proof(Proof),
    #[prost(message, tag = "4")]
    Welcome(Welcome),
    #[prost(message, tag = "5")]
    Refuse(Refuse),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeId {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub incarnation: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(bytes = "vec", tag = "1")]
    pub session_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub from: Option<NodeId>,
    #[prost(string, tag = "3")]
    pub target: String,
    #[prost(uint32, tag = "4")]
    pub protocol_version: u32,
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    #[prost(uint64, tag = "6")]
    pub max_message_bytes: u64,
    #[prost(message, optional, tag = "7")]
    pub resume: Option<ResumeRequest>,
    #[prost(uint64, tag = "8")]
    pub credit_window: u64,
    #[prost(uint64, tag = "12")]
    pub credit_window_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumeRequest {
    #[prost(uint64, tag = "1")]
    pub last_received: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub acceptor_incarnation: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Challenge {
    #[prost(message, optional, tag = "1")]
    pub from: Option<NodeId>,
    #[prost(bytes = "vec", tag = "2")]
    pub nonce: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub proof: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Proof {
    #[prost(bytes = "vec", tag = "1")]
    pub proof: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Welcome {
    #[prost(message, optional, tag = "1")]
    pub resumed: Option<ResumePoint>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumePoint {
    #[prost(uint64, tag = "1")]
    pub last_received: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Refuse {
    #[prost(int32, tag = "1")]
    pub reason: i32,
    #[prost(string, tag = "2")]
    pub detail: String,
    #[prost(string, tag = "3")]
    pub protocol: String,
}

/// One raw stream to a node: what the stranger writes, and what it reads.
pub struct RawStream {
    pub tx: mpsc::UnboundedSender<Bytes>,
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

    pub fn send(&self, frame: Kind) {
        let bytes = Frame { kind: Some(frame) }.encode_to_vec();
        let _ = self.tx.send(bytes.into());
    }

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
