//! TLS and mutual TLS between nodes: sessions work over TLS; a client without the
//! certificate a node requires, or trusting another CA, or dialling in plaintext, is
//! refused with a typed error; plaintext off the loopback interface is refused; and the
//! `duologue` command does the same across processes (`certs`, `node --tls-*`,
//! `chat --tls-*`). Certificates are made with rcgen at run time.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use duologue::{
    ConnectError, Node, NodeError, RemoteRef, Secret,
    tls::{ClientTls, ServerTls, TlsFailure, TlsRefusal},
};
use duologue_testkit::{ChildGuard, NodeProcess, SecretDir};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use support::*;
use tokio::io::AsyncWriteExt;

/// A CA and certificates it signed, in PEM.
struct Pki {
    ca: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Pair {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        Self {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1, localhost and ::1, good for servers and clients.
    fn issue(&self, name: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        Pair {
            cert,
            key: key.serialize_pem(),
        }
    }
}

/// A probe served over TLS on 127.0.0.1, requiring client certificates from `client_ca`
/// when given.
async fn tls_server(pki: &Pki, client_ca: Option<&str>) -> Served {
    let pair = pki.issue("server");
    let mut tls = ServerTls::from_pem(pair.cert, pair.key).unwrap();
    if let Some(ca) = client_ca {
        tls = tls.client_ca_pem(ca).unwrap();
    }
    let node = Node::builder()
        .name("server")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .tls(tls)
        .start()
        .await
        .expect("a TLS node starts");
    served_probe(node).await
}

/// A node dialling with `tls` (plaintext when `None`), giving up after a short deadline.
async fn client(tls: Option<ClientTls>) -> Node {
    let mut builder = Node::builder()
        .name("client")
        .secret(Secret::new(SECRET).unwrap())
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        builder = builder.peer_tls(tls);
    }
    builder.start().await.expect("the client node starts")
}

async fn connect(client: Node, server: &Served) -> Dialled {
    tokio::time::timeout(WAIT, dial(client, &addr(&server.node), "probe"))
        .await
        .expect("connect ends within the wait bound")
}

async fn cast_and_call(remote: &RemoteRef<PingPong>, server: &mut Served) {
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();
    assert_eq!(next_ping(&mut server.seen).await.0, 1);
    let pong = remote
        .call(Ping { n: 2, body: vec![] }, WAIT)
        .await
        .expect("a call over TLS is answered");
    assert_eq!(pong.n, 2);
}

fn tls_failure(result: Result<RemoteRef<PingPong>, ConnectError>) -> TlsFailure {
    match result {
        Err(ConnectError::Tls { failure, .. }) => failure,
        Err(other) => panic!("expected ConnectError::Tls, got {other:?}"),
        Ok(_) => panic!("the session opened"),
    }
}

#[tokio::test]
async fn casts_and_calls_work_over_tls() {
    let pki = Pki::new("test CA");
    let mut server = tls_server(&pki, None).await;
    let tls = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
    let dialled = connect(client(Some(tls)).await, &server).await;
    let remote = dialled.result.expect("a session over TLS opens");
    cast_and_call(&remote, &mut server).await;
}

/// On a thread-per-core runtime the server deals each TLS connection, handshake done, to
/// a core of its own: sessions over TLS work there as anywhere.
#[test]
fn casts_and_calls_work_over_tls_between_thread_per_core_nodes() {
    let runtime = duologue::settings::RuntimeFlavor::ThreadPerCore
        .build()
        .expect("the runtime starts");
    runtime.block_on(async {
        let pki = Pki::new("test CA");
        let mut server = tls_server(&pki, None).await;
        for _ in 0..3 {
            let tls = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
            let dialled = connect(client(Some(tls)).await, &server).await;
            let remote = dialled.result.expect("a session over TLS opens");
            cast_and_call(&remote, &mut server).await;
            // The call's ping, seen too.
            assert_eq!(next_ping(&mut server.seen).await.0, 2);
        }
    });
    runtime.shutdown_background();
}

/// A session over TLS resumes after its connection is cut: the resume stream, on a new
/// TLS connection, asks for the certificate binding again and proves the session's
/// resume key over it (the gate of a node serving TLS binds its own certificate).
#[tokio::test]
async fn a_tls_session_resumes_after_a_cut_with_its_proofs_bound_again() {
    let pki = Pki::new("test CA");
    let mut server = tls_server(&pki, None).await;
    // A TCP relay that passes TLS through untouched, and can cut every connection.
    let proxy = duologue_testkit::FaultProxy::start(server.node.local_addr().unwrap())
        .await
        .unwrap();
    let tls = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
    let dialled = tokio::time::timeout(
        WAIT,
        dial(client(Some(tls)).await, &proxy.addr().to_string(), "probe"),
    )
    .await
    .expect("connect ends within the wait bound");
    let remote = dialled.result.expect("a session over TLS opens");
    cast_and_call(&remote, &mut server).await;

    assert!(proxy.cut_all() > 0, "the session's connection is cut");
    tokio::time::timeout(WAIT, async {
        while !matches!(
            next(&mut server.seen).await,
            Seen::Signal(duologue::SessionSignal::Resumed(..))
        ) {}
    })
    .await
    .expect("the server's session resumes within the wait bound");
    let pong = remote
        .call(Ping { n: 3, body: vec![] }, WAIT)
        .await
        .expect("a call after the resume is answered");
    assert_eq!(pong.n, 3);
    assert_eq!(proxy.cuts(), 1);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_admits_one_with() {
    let pki = Pki::new("test CA");
    let mut server = tls_server(&pki, Some(&pki.ca)).await;

    let anonymous = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
    let refused = connect(client(Some(anonymous)).await, &server).await;
    assert_eq!(
        tls_failure(refused.result),
        TlsFailure::ClientCertificateRequired
    );

    let pair = pki.issue("client");
    let known = ClientTls::from_ca_pem(pki.ca.clone())
        .unwrap()
        .identity_pem(pair.cert, pair.key)
        .unwrap();
    let dialled = connect(client(Some(known)).await, &server).await;
    let remote = dialled.result.expect("a client with a certificate gets in");
    cast_and_call(&remote, &mut server).await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_certificate_from_another_ca() {
    let pki = Pki::new("test CA");
    let server = tls_server(&pki, Some(&pki.ca)).await;
    let stranger = Pki::new("another CA").issue("client");
    let tls = ClientTls::from_ca_pem(pki.ca.clone())
        .unwrap()
        .identity_pem(stranger.cert, stranger.key)
        .unwrap();
    let refused = connect(client(Some(tls)).await, &server).await;
    assert_eq!(tls_failure(refused.result), TlsFailure::UntrustedByPeer);
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = Pki::new("test CA");
    let server = tls_server(&pki, None).await;
    let tls = ClientTls::from_ca_pem(Pki::new("another CA").ca).unwrap();
    let refused = connect(client(Some(tls)).await, &server).await;
    assert_eq!(tls_failure(refused.result), TlsFailure::UntrustedPeer);
}

#[tokio::test]
async fn a_plaintext_client_against_a_tls_node_fails_clearly() {
    let pki = Pki::new("test CA");
    let server = tls_server(&pki, None).await;
    let refused = connect(client(None).await, &server).await;
    match refused.result {
        Err(ConnectError::Tls { failure, .. }) => {
            assert_eq!(failure, TlsFailure::PlaintextToTls)
        }
        Err(other) => panic!("expected ConnectError::Tls, got {other:?}"),
        Ok(_) => panic!("a plaintext session opened on a TLS node"),
    }
}

#[tokio::test]
async fn a_tls_client_against_a_plaintext_node_fails_clearly() {
    let pki = Pki::new("test CA");
    let server = served_probe(listening_node("server", SECRET).await).await;
    let tls = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
    let refused = connect(client(Some(tls)).await, &server).await;
    assert_eq!(tls_failure(refused.result), TlsFailure::NotTls);
}

#[tokio::test]
async fn plaintext_off_the_loopback_interface_is_refused_unless_said() {
    let start = |builder: duologue::NodeBuilder| async move {
        builder
            .listen("0.0.0.0:0".parse().unwrap())
            .secret(Secret::new(SECRET).unwrap())
            .start()
            .await
    };
    match start(Node::builder()).await {
        Err(NodeError::PlaintextListen { addr }) => assert_eq!(addr.to_string(), "0.0.0.0:0"),
        Err(other) => panic!("expected NodeError::PlaintextListen, got {other}"),
        Ok(_) => panic!("a plaintext node listened on 0.0.0.0"),
    }
    let said = start(Node::builder()).await.err().unwrap().to_string();
    assert!(said.contains("NodeBuilder::insecure_plaintext"), "{said}");

    let node = start(Node::builder().insecure_plaintext()).await.unwrap();
    node.shutdown().await;
    let pair = Pki::new("test CA").issue("server");
    let tls = ServerTls::from_pem(pair.cert, pair.key).unwrap();
    let node = start(Node::builder().tls(tls)).await.unwrap();
    node.shutdown().await;
    // Loopback plaintext stays allowed.
    listening_node("loopback", SECRET).await.shutdown().await;
}

#[tokio::test]
async fn unusable_certificate_files_are_typed_errors_naming_the_file() {
    let pki = Pki::new("test CA");
    let dir = SecretDir::create().unwrap();
    let a = pki.issue("a");
    let b = pki.issue("b");
    let cert = dir.write("a.pem", &a.cert).unwrap();
    let wrong_key = dir.write("b.key", &b.key).unwrap();
    let garbage = dir.write("garbage.pem", "not PEM at all").unwrap();

    let missing = dir.secret().with_file_name("missing.pem");
    match ServerTls::from_files(&missing, &wrong_key) {
        Err(NodeError::Tls { path, .. }) => assert_eq!(Path::new(&path), missing),
        other => panic!("expected NodeError::Tls, got {other:?}"),
    }
    match ServerTls::from_files(&cert, &wrong_key) {
        Err(NodeError::Tls { path, reason }) => {
            assert_eq!(Path::new(&path), cert);
            assert!(reason.contains("b.key"), "{reason}");
        }
        other => panic!("expected NodeError::Tls, got {other:?}"),
    }
    match ClientTls::from_ca_file(&garbage) {
        Err(NodeError::Tls { path, .. }) => assert_eq!(Path::new(&path), garbage),
        other => panic!("expected NodeError::Tls, got {other:?}"),
    }
}

/// `duologue certs`, a `duologue node` requiring client certificates, and `duologue chat`
/// members: one with a certificate joins and talks; one without is refused with exit 6
/// and a message saying what is missing; one in plaintext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_serves_and_dials_mutual_tls() {
    let secrets = SecretDir::create().unwrap();
    let certs = secrets.secret().with_file_name("certs");
    let path = make_certs(&certs, &["hub", "ann"]).await;
    for key in ["ca.key", "hub.key", "ann.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    let secret = secrets.secret().display().to_string();
    let hub = NodeProcess::start(
        &duologue_exe(),
        "hub",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--secret-file".into(),
            secret.clone(),
            "--actor".into(),
            "chat-room:lobby".into(),
            "--tls-cert".into(),
            path("hub.pem"),
            "--tls-key".into(),
            path("hub.key"),
            "--tls-client-ca".into(),
            path("ca.pem"),
        ],
        WAIT,
    )
    .await
    .expect("a TLS node starts");
    let peer = hub.addr.to_string();
    let member = |user: &str, tls: &[String]| {
        let mut args: Vec<String> = ["chat", "--peer", &peer, "--room", "lobby", "--user", user]
            .map(String::from)
            .into();
        args.extend([
            "--secret-file".into(),
            secret.clone(),
            "--connect-timeout".into(),
            "2s".into(),
        ]);
        args.extend_from_slice(tls);
        ChildGuard::spawn(user, &duologue_exe(), &args).expect("duologue chat starts")
    };

    let mut ann = member(
        "ann",
        &[
            "--tls-ca".into(),
            path("ca.pem"),
            "--tls-client-cert".into(),
            path("ann.pem"),
            "--tls-client-key".into(),
            path("ann.key"),
        ],
    );
    ann.stderr_until("joined lobby", WAIT)
        .await
        .expect("a member with a client certificate joins");

    let mut bob = member("bob", &["--tls-ca".into(), path("ca.pem")]);
    let said = bob
        .stderr_until("duologue chat:", WAIT)
        .await
        .expect("a member without a certificate is told why");
    assert!(
        said.contains("TLS") && said.contains("requires a client certificate"),
        "{said}"
    );
    assert_eq!(bob.wait(WAIT).await.unwrap(), Some(6));

    let mut eve = member("eve", &[]);
    eve.stderr_until("serves TLS", WAIT)
        .await
        .expect("a plaintext member is told the node serves TLS");
    assert_eq!(eve.wait(WAIT).await.unwrap(), Some(6));

    let stdin = ann.stdin.as_mut().expect("stdin piped");
    stdin.write_all(b"over tls\n").await.unwrap();
    ann.close_stdin();
    let left = ann
        .stderr_until("messages sent", WAIT)
        .await
        .expect("ann leaves");
    assert!(left.contains("1 messages sent, 1 acked"), "{left}");
    assert_eq!(ann.wait(WAIT).await.unwrap(), Some(0));
}

/// `duologue node` refuses a plaintext listen address off the loopback interface, and
/// says what to do.
#[tokio::test]
async fn the_command_refuses_plaintext_off_loopback() {
    let secrets = SecretDir::create().unwrap();
    let mut node = ChildGuard::spawn(
        "open",
        &duologue_exe(),
        &[
            "node".into(),
            "--name".into(),
            "open".into(),
            "--listen".into(),
            "0.0.0.0:0".into(),
            "--secret-file".into(),
            secrets.secret().display().to_string(),
        ],
    )
    .unwrap();
    let said = node
        .stderr_until("--insecure-plaintext", WAIT)
        .await
        .expect("the node says what to do");
    assert!(said.contains("0.0.0.0"), "{said}");
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(1));
}

/// The session port's count of TLS refusals for `reason`.
fn refused(node: &Node, reason: TlsRefusal) -> u64 {
    node.status()
        .tls_refused
        .iter()
        .filter(|r| r.port == "session" && r.reason == reason)
        .map(|r| r.count)
        .sum()
}

/// Waits until `node` has counted `at_least` refusals for `reason`.
async fn until_refused(node: &Node, reason: TlsRefusal, at_least: u64) {
    tokio::time::timeout(WAIT, async {
        while refused(node, reason) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{reason} was not counted: {:?}", node.status().tls_refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_tls_handshake_is_counted_by_reason() {
    let pki = Pki::new("test CA");
    let pair = pki.issue("server");
    let tls = ServerTls::from_pem(pair.cert, pair.key)
        .unwrap()
        .client_ca_pem(pki.ca.clone())
        .unwrap();
    let mut config = duologue::NodeConfig {
        name: "server".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(tls),
        ..duologue::NodeConfig::default()
    };
    config.session.handshake_timeout = Duration::from_millis(300);
    let node = Node::builder()
        .config(config)
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let server = served_probe(node).await;
    let node = &server.node;
    let at = node.local_addr().unwrap();

    // No client certificate; one from another CA; plaintext.
    let anonymous = ClientTls::from_ca_pem(pki.ca.clone()).unwrap();
    assert!(
        connect(client(Some(anonymous)).await, &server)
            .await
            .result
            .is_err()
    );
    until_refused(node, TlsRefusal::NoClientCertificate, 1).await;
    let stranger = Pki::new("another CA").issue("client");
    let foreign = ClientTls::from_ca_pem(pki.ca.clone())
        .unwrap()
        .identity_pem(stranger.cert, stranger.key)
        .unwrap();
    assert!(
        connect(client(Some(foreign)).await, &server)
            .await
            .result
            .is_err()
    );
    until_refused(node, TlsRefusal::ClientCertificateRefused, 1).await;
    assert!(connect(client(None).await, &server).await.result.is_err());
    until_refused(node, TlsRefusal::NotTls, 1).await;
    // Opened and dropped before a byte: abandoned, 100 times.
    for _ in 0..100 {
        drop(tokio::net::TcpStream::connect(at).await.unwrap());
    }
    until_refused(node, TlsRefusal::Abandoned, 100).await;
    // Opened and left silent: timed out at the handshake bound.
    let silent = tokio::net::TcpStream::connect(at).await.unwrap();
    until_refused(node, TlsRefusal::TimedOut, 1).await;
    drop(silent);
    // A client with its certificate still gets in.
    let own = pki.issue("client");
    let known = ClientTls::from_ca_pem(pki.ca.clone())
        .unwrap()
        .identity_pem(own.cert, own.key)
        .unwrap();
    assert!(
        connect(client(Some(known)).await, &server)
            .await
            .result
            .is_ok()
    );
}

/// `duologue certs` writes its keys readable by their owner only, and never overwrites:
/// asked again into the same folder, it refuses and leaves the first files as they were.
#[tokio::test]
async fn the_certs_command_keeps_its_keys_private_and_never_overwrites() {
    let secrets = SecretDir::create().unwrap();
    let dir = secrets.secret().with_file_name("certs");
    let path = make_certs(&dir, &["hub"]).await;
    for key in ["ca.key", "hub.key"] {
        let mode = std::fs::metadata(path(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}: {mode:o}");
    }
    let before = std::fs::read(path("ca.key")).unwrap();
    let args = ["certs".to_owned(), dir.display().to_string()];
    let mut again = ChildGuard::spawn("certs", &duologue_exe(), &args).unwrap();
    let said = again
        .stderr_until("duologue certs:", WAIT)
        .await
        .expect("the second run says why it stops");
    assert!(said.contains("ca.pem"), "{said}");
    assert_eq!(again.wait(WAIT).await.unwrap(), Some(1));
    assert_eq!(std::fs::read(path("ca.key")).unwrap(), before);
}
