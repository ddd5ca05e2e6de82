//! The fault-injecting proxy itself, over plain TCP echo on 127.0.0.1: bytes flow both
//! ways, cuts close both sides and are counted, `cut_every` passes exactly its budget,
//! and the blackhole holds bytes back until it is lifted.

use std::net::SocketAddr;
use std::time::Duration;

use duologue_testkit::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound of any wait for something that must happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on 127.0.0.1; reports each connection's byte total when it ends.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n as u64;
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = tx.send(total);
            });
        }
    });
    (addr, rx)
}

async fn proxied() -> (FaultProxy, mpsc::UnboundedReceiver<u64>) {
    let (echo, totals) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.unwrap();
    (proxy, totals)
}

/// Sends `bytes` and reads the echo back.
async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, bytes);
}

/// Reads until EOF or an error, bounded by [`WAIT`]; returns the bytes read before it.
async fn read_to_end_or_error(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the connection ends in time");
    got
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Waits until the proxy holds `n` connections (it registers them as it accepts).
async fn until_connections(proxy: &FaultProxy, n: usize) {
    timeout(WAIT, async {
        while proxy.connections() != n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("connections registered in time");
}

#[tokio::test]
async fn bytes_flow_both_ways() {
    let (proxy, _) = proxied().await;
    let mut a = connect(&proxy).await;
    let mut b = connect(&proxy).await;
    round_trip(&mut a, b"hello").await;
    round_trip(&mut b, b"world").await;

    // A megabyte each way at once: no deadlock when both directions are full.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (mut rx, mut tx) = a.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move { tx.write_all(&sent).await.map(|()| tx) });
    let mut back = vec![0u8; big.len()];
    timeout(WAIT, rx.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, big);
    let _tx = writer.await.unwrap().unwrap();
    assert_eq!(proxy.cuts(), 0);
}

#[tokio::test]
async fn half_close_passes_through() {
    let (proxy, mut totals) = proxied().await;
    let mut a = connect(&proxy).await;
    round_trip(&mut a, b"bye").await;
    a.shutdown().await.unwrap();
    // The echo server sees EOF, closes, and the client sees EOF too.
    assert_eq!(read_to_end_or_error(&mut a).await, b"");
    assert_eq!(timeout(WAIT, totals.recv()).await.unwrap(), Some(3));
    assert_eq!(proxy.cuts(), 0);
}

#[tokio::test]
async fn cut_all_closes_both_sides_and_counts() {
    let (proxy, mut totals) = proxied().await;
    assert_eq!(proxy.cut_all(), 0);

    let mut a = connect(&proxy).await;
    round_trip(&mut a, b"one").await;
    assert_eq!(proxy.cut_all(), 1);
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(read_to_end_or_error(&mut a).await, b"");
    // The target side was closed too.
    assert_eq!(timeout(WAIT, totals.recv()).await.unwrap(), Some(3));

    // The proxy still accepts; two connections are two cuts.
    let mut b = connect(&proxy).await;
    let mut c = connect(&proxy).await;
    round_trip(&mut b, b"two").await;
    round_trip(&mut c, b"three").await;
    assert_eq!(proxy.cut_all(), 2);
    assert_eq!(proxy.cuts(), 3);
    read_to_end_or_error(&mut b).await;
    read_to_end_or_error(&mut c).await;

    // A connection still waiting (blackholed, target not dialled) is cut as well.
    proxy.set_blackhole(true);
    let mut d = connect(&proxy).await;
    until_connections(&proxy, 1).await;
    assert_eq!(proxy.cut_all(), 1);
    assert_eq!(proxy.cuts(), 4);
    read_to_end_or_error(&mut d).await;
}

#[tokio::test]
async fn cut_every_passes_exactly_its_budget() {
    let (proxy, mut totals) = proxied().await;
    proxy.cut_every(100);

    let mut a = connect(&proxy).await;
    round_trip(&mut a, &[1; 60]).await;
    // 60 + 60 > 100: 40 more pass, then the connection is cut.
    a.write_all(&[2; 60]).await.unwrap();
    let echoed = read_to_end_or_error(&mut a).await;
    assert!(echoed.len() <= 40 && echoed.iter().all(|&b| b == 2));
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(timeout(WAIT, totals.recv()).await.unwrap(), Some(100));

    // The budget spans connections, and a trigger cuts them all.
    let mut b = connect(&proxy).await;
    let mut c = connect(&proxy).await;
    round_trip(&mut b, &[3; 30]).await;
    round_trip(&mut c, &[4; 30]).await;
    b.write_all(&[5; 50]).await.unwrap();
    read_to_end_or_error(&mut b).await;
    read_to_end_or_error(&mut c).await;
    assert_eq!(proxy.cuts(), 3);
    let mut seen = [
        timeout(WAIT, totals.recv()).await.unwrap().unwrap(),
        timeout(WAIT, totals.recv()).await.unwrap().unwrap(),
    ];
    seen.sort_unstable();
    assert_eq!(seen, [30, 70]);

    // The count starts afresh after a cut: 99 bytes pass, the 100th cuts.
    let mut d = connect(&proxy).await;
    round_trip(&mut d, &[6; 99]).await;
    assert_eq!(proxy.cuts(), 3);
    d.write_all(&[7]).await.unwrap();
    read_to_end_or_error(&mut d).await;
    assert_eq!(proxy.cuts(), 4);
    assert_eq!(timeout(WAIT, totals.recv()).await.unwrap(), Some(100));

    // Off again: nothing is cut.
    proxy.cut_every(0);
    let mut e = connect(&proxy).await;
    round_trip(&mut e, &[8; 500]).await;
    assert_eq!(proxy.cuts(), 4);
}

#[tokio::test]
async fn blackhole_holds_bytes_until_lifted() {
    let (proxy, _) = proxied().await;
    let mut a = connect(&proxy).await;
    round_trip(&mut a, b"before").await;

    proxy.set_blackhole(true);
    // An existing connection: nothing comes back.
    a.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(
        timeout(QUIET, a.read_exact(&mut buf)).await.is_err(),
        "nothing passes the blackhole"
    );
    // A new connection is accepted, but silent.
    let mut b = connect(&proxy).await;
    b.write_all(b"late").await.unwrap();
    let mut buf_b = [0u8; 4];
    assert!(timeout(QUIET, b.read_exact(&mut buf_b)).await.is_err());

    proxy.set_blackhole(false);
    // `read_exact` was cancelled above; read afresh (no bytes were consumed: none came).
    let mut buf = [0u8; 4];
    timeout(WAIT, a.read_exact(&mut buf))
        .await
        .expect("released in time")
        .unwrap();
    assert_eq!(&buf, b"held");
    let mut buf_b = [0u8; 4];
    timeout(WAIT, b.read_exact(&mut buf_b))
        .await
        .expect("released in time")
        .unwrap();
    assert_eq!(&buf_b, b"late");
    assert_eq!(proxy.cuts(), 0);
}

#[tokio::test]
async fn dropping_the_proxy_closes_everything() {
    let (proxy, _) = proxied().await;
    let addr = proxy.addr();
    let mut a = connect(&proxy).await;
    round_trip(&mut a, b"x").await;
    drop(proxy);
    read_to_end_or_error(&mut a).await;
    // The listener goes too (its task is aborted, not stopped in place): connecting
    // fails soon.
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes in time");
}
