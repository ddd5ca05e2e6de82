//! A peer that sends bytes that are not our protocol gets a typed error, never a panic
//! or a hang, and the node keeps serving everyone else.

mod support;

use bytes::Bytes;
use duologue::CloseReason;
use duologue::ProtocolError;
use duologue::wire::FrameError;
use duologue_testkit::raw_peer::RawCodec;
use futures::StreamExt;
use prost::Message;
use support::*;
use tonic::Request;

/// The start of our `Frame { hello: Hello { session_id } }`, written by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct RawFrame {
    #[prost(message, optional, tag = "1")]
    hello: Option<RawHello>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawHello {
    #[prost(bytes = "vec", tag = "1")]
    session_id: Vec<u8>,
}

/// Opens a raw session to `addr`, sends `frames`, and reads until the server ends it.
async fn send_raw(addr: &str, frames: Vec<Bytes>) -> Vec<Bytes> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/duologue.v1.Duologue/Converse");
    let outbound = futures::stream::iter(frames).chain(futures::stream::pending());
    let mut replies = Vec::new();
    let response = grpc.streaming(Request::new(outbound), path, RawCodec).await;
    if let Ok(response) = response {
        let mut inbound = response.into_inner();
        // The server must end the stream by itself: pending() above never does.
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(WAIT, inbound.next()).await {
            replies.push(frame);
        }
    }
    replies
}

#[tokio::test]
async fn undecodable_bytes_are_a_typed_protocol_error() {
    let server = listening_node("server", SECRET).await;
    let mut events = server.events();

    send_raw(
        &addr(&server),
        vec![Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])],
    )
    .await;

    let reason = rejection(&mut events).await;
    assert!(
        matches!(
            reason,
            CloseReason::Protocol(ProtocolError::Malformed(FrameError::Undecodable(_)))
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn hello_with_a_short_session_id_is_refused_with_the_field_named() {
    let server = listening_node("server", SECRET).await;
    let mut events = server.events();
    let hello = RawFrame {
        hello: Some(RawHello {
            session_id: vec![1, 2, 3],
        }),
    };

    let replies = send_raw(&addr(&server), vec![hello.encode_to_vec().into()]).await;

    let reason = rejection(&mut events).await;
    assert_eq!(
        reason,
        CloseReason::Protocol(ProtocolError::Malformed(FrameError::BadLength {
            field: "session_id",
            expected: 16,
            got: 3
        }))
    );
    assert_eq!(
        replies.len(),
        1,
        "one Refuse frame, then the end of the stream"
    );
}

#[tokio::test]
async fn data_before_the_handshake_is_refused() {
    let server = listening_node("server", SECRET).await;
    let mut events = server.events();
    // Frame { batch (field 6): Batch { envelopes (field 2): Envelope { seq: 1 } } }
    let batch = Bytes::from_static(&[0x32, 0x04, 0x12, 0x02, 0x08, 0x01]);

    send_raw(&addr(&server), vec![batch]).await;

    let reason = rejection(&mut events).await;
    assert!(
        matches!(
            reason,
            CloseReason::Protocol(ProtocolError::UnexpectedFrame { frame: "Batch", .. })
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn the_node_keeps_serving_after_bad_peers() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    send_raw(&addr(&server.node), vec![Bytes::from_static(b"garbage")]).await;

    let client = dial(
        dialling_node("client", SECRET).await,
        &addr(&server.node),
        "probe",
    )
    .await;

    let pong = client
        .result
        .unwrap()
        .call(Ping { n: 3, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(pong.n, 3);
}
