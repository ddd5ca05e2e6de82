//! The network-namespace lab (`duologue_testkit::Lab`): real network stacks, delay, loss,
//! partitions, hosts files, and cleanup. Needs root, `ip` and `iptables`; each test has
//! its own lab, so they run in parallel.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use duologue_testkit::{Lab, Signal};

/// Bound of every wait that should succeed.
const WAIT: Duration = Duration::from_secs(10);

/// How long a connect into a partition is given before it counts as timed out.
const CUT_CONNECT: Duration = Duration::from_secs(1);

/// Bound of a connection and a round trip where nothing is lost.
const LOSSLESS: Duration = Duration::from_millis(500);

/// Datagrams per burst in the loss test.
const BURST: usize = 1000;

/// A TCP listener in host `i`'s namespace, on its address.
fn listen(lab: &Lab, i: usize) -> TcpListener {
    let addr = SocketAddr::new(lab.ip(i), 0);
    lab.run_in(i, move || TcpListener::bind(addr))
        .expect("enter namespace")
        .expect("bind")
}

/// Connects from host `i`'s namespace to `to` within `timeout`.
fn connect(lab: &Lab, i: usize, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    lab.run_in(i, move || TcpStream::connect_timeout(&to, timeout))
        .expect("enter namespace")
}

/// Accepts one connection on `listener` (on a thread), and answers each
/// byte it reads with the same byte until the peer closes.
fn echo_one(listener: TcpListener) -> std::thread::JoinHandle<SocketAddr> {
    std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut byte = [0u8; 1];
        while matches!(stream.read(&mut byte), Ok(1)) {
            if stream.write_all(&byte).is_err() {
                break;
            }
        }
        peer
    })
}

/// The shortest of `n` one-byte round trips on `stream`.
fn min_rtt(stream: &mut TcpStream, n: usize) -> Duration {
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut best = Duration::MAX;
    for k in 0..n {
        let sent = [u8::try_from(k % 256).expect("byte")];
        let start = Instant::now();
        stream.write_all(&sent).expect("write");
        let mut back = [0u8; 1];
        stream.read_exact(&mut back).expect("echo");
        best = best.min(start.elapsed());
        assert_eq!(back, sent);
    }
    best
}

#[test]
fn three_hosts_reach_each_other() {
    let lab = Lab::new(3).expect("lab");
    let addrs: BTreeSet<IpAddr> = (0..3).map(|i| lab.ip(i)).collect();
    assert_eq!(addrs.len(), 3, "distinct addresses: {addrs:?}");
    for to in 0..3 {
        for from in (0..3).filter(|&f| f != to) {
            let listener = listen(&lab, to);
            let target = listener.local_addr().expect("addr");
            let server = echo_one(listener);
            let start = Instant::now();
            let mut client = connect(&lab, from, target, WAIT).expect("connect");
            assert_eq!(client.local_addr().expect("local").ip(), lab.ip(from));
            min_rtt(&mut client, 1);
            // Nothing lost on the way (a lost SYN is sent again after a second).
            assert!(
                start.elapsed() < LOSSLESS,
                "{from} -> {to}: {:?}",
                start.elapsed()
            );
            drop(client);
            // No NAT: the server sees the client's own address.
            assert_eq!(server.join().expect("server").ip(), lab.ip(from));
        }
    }
}

#[tokio::test]
async fn spawn_runs_the_program_itself_in_the_namespace() {
    let lab = Lab::new(2).expect("lab");
    let args = ["-c", "echo $$; exec sleep 60"].map(str::to_owned);
    let mut child = lab
        .spawn(1, "sleeper", Path::new("sh"), &args)
        .expect("spawn");
    let pid = child.pid().expect("pid");
    // The shell printed its pid, and it is the guard's: `ip` replaced itself.
    let said = child.stdout_line(WAIT).await.expect("line").expect("pid");
    assert_eq!(said.trim(), pid.to_string());
    let ns = std::fs::metadata(Path::new("/run/netns").join(lab.namespace(1))).expect("ns");
    let its = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("its ns");
    assert_eq!((its.dev(), its.ino()), (ns.dev(), ns.ino()));
    child.signal(Signal::SIGKILL).expect("kill");
    assert_eq!(
        child.wait(WAIT).await.expect("exit"),
        None,
        "killed by a signal"
    );
}

/// A stand-in for a node binary: says it listens, echoes its command line on stderr, and
/// sleeps.
const FAKE_NODE: &str = "#!/bin/sh\n\
    echo \"listening on 10.0.2.2:7000\"\n\
    echo \"args: $*\" >&2\n\
    exec sleep 60\n";

#[tokio::test]
async fn start_node_and_start_binary_run_in_the_namespace() {
    use std::os::unix::fs::PermissionsExt;

    let lab = Lab::new(2).expect("lab");
    let dir = std::env::temp_dir().join(format!("lab-fake-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = dir.join("fake-node");
    std::fs::write(&exe, FAKE_NODE).expect("script");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("mode");
    let ns = std::fs::metadata(Path::new("/run/netns").join(lab.namespace(1))).expect("ns");
    let args = ["--listen".to_owned(), "0.0.0.0:7000".to_owned()];

    let mut node = lab
        .start_node(1, &exe, "n1", &args, WAIT)
        .await
        .expect("node");
    let mut binary = lab
        .start_binary(1, &exe, "b1", &args, WAIT)
        .await
        .expect("binary");
    let _ = std::fs::remove_dir_all(&dir);

    for (process, want) in [
        (&mut node, "args: node --name n1 --listen 0.0.0.0:7000"),
        (&mut binary, "args: --name b1 --listen 0.0.0.0:7000"),
    ] {
        assert_eq!(process.addr, "10.0.2.2:7000".parse().expect("addr"));
        let line = process.child.stderr_line(WAIT).await.expect("line");
        assert_eq!(line.as_deref(), Some(want));
        let pid = process.child.pid().expect("pid");
        let its = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("its ns");
        assert_eq!((its.dev(), its.ino()), (ns.dev(), ns.ino()));
    }
}

#[tokio::test]
async fn delay_applies_to_both_crossings_of_the_impaired_link() {
    let lab = Lab::new(3).expect("lab");
    let listener = listen(&lab, 2);
    let target = listener.local_addr().expect("addr");
    let server = echo_one(listener);
    let mut client = connect(&lab, 0, target, WAIT).expect("connect");
    let ms = Duration::from_millis;

    let plain = min_rtt(&mut client, 5);
    lab.impair(2, ms(20), 0.0).expect("impair");
    // A process started now inherits the delay thread's socket (nfq opens it without
    // close-on-exec) and outlives the thread: impairing again must still work.
    let args = ["60".to_owned()];
    let _inheritor = lab
        .spawn(1, "sleep", Path::new("sleep"), &args)
        .expect("spawn");
    let delayed = min_rtt(&mut client, 5);
    lab.impair(2, ms(5), 0.0).expect("impair again");
    let changed = min_rtt(&mut client, 5);
    lab.clear_impairment(2).expect("clear");
    let cleared = min_rtt(&mut client, 5);
    lab.impair(2, ms(20), 0.0).expect("impair after clearing");
    let again = min_rtt(&mut client, 5);
    lab.impair(0, ms(10), 0.0).expect("impair the other end");
    let both = min_rtt(&mut client, 5);
    eprintln!(
        "round trip 0 <-> 2: plain {plain:?}, 20 ms {delayed:?}, 5 ms {changed:?}, \
         cleared {cleared:?}, 20 ms again {again:?}, and 10 ms at 0 {both:?}"
    );

    // The impaired link is crossed twice per round trip. The upper bounds are loose: a
    // busy machine delays the delay thread too.
    assert!(plain < ms(10), "plain {plain:?}");
    assert!((ms(40)..ms(200)).contains(&delayed), "20 ms: {delayed:?}");
    assert!(changed >= ms(10) && changed < delayed, "5 ms: {changed:?}");
    assert!(cleared < ms(10), "cleared {cleared:?}");
    assert!((ms(40)..ms(200)).contains(&again), "20 ms again: {again:?}");
    assert!(
        (ms(60)..ms(300)).contains(&both),
        "20 ms and 10 ms: {both:?}"
    );
    drop(client);
    server.join().expect("server");
}

/// A socket in host `i`'s namespace, on its address, with room for a whole burst.
fn udp(lab: &Lab, i: usize) -> UdpSocket {
    let addr = SocketAddr::new(lab.ip(i), 0);
    let socket = lab
        .run_in(i, move || UdpSocket::bind(addr))
        .expect("enter namespace")
        .expect("bind");
    // Forced past rmem_max (root): the receiver must not be what drops.
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, 8 << 20).expect("buffer");
    socket
}

/// Sends [`BURST`] datagrams from `from` to `to`, then an end marker until one arrives;
/// how many of the burst arrived before it. The impaired link keeps packet order, so
/// nothing of the burst is still on its way once a marker is through.
fn burst(from: &UdpSocket, to: UdpSocket) -> usize {
    let target = to.local_addr().expect("addr");
    let (done_tx, done_rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        to.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut seen = BTreeSet::new();
        let mut buf = [0u8; 64];
        loop {
            let n = to.recv(&mut buf).expect("a datagram within the bound");
            match std::str::from_utf8(&buf[..n]).expect("utf-8") {
                "end" => break,
                data => assert!(seen.insert(data.to_owned()), "duplicate {data}"),
            }
        }
        let _ = done_tx.send(());
        seen.len()
    });
    for k in 0..BURST {
        from.send_to(format!("{k}").as_bytes(), target)
            .expect("send");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        from.send_to(b"end", target).expect("send end");
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(e) => panic!("no end marker through within {WAIT:?}: {e}"),
        }
    }
    receiver.join().expect("receiver")
}

#[test]
fn loss_drops_its_share_of_a_burst_each_way() {
    let lab = Lab::new(3).expect("lab");
    let (a, b) = (udp(&lab, 0), udp(&lab, 2));

    // The delay thread on the path but no loss: the whole burst arrives, so what goes
    // missing below is the impairment's doing.
    lab.impair(2, Duration::ZERO, 0.0).expect("impair");
    let clean = (
        burst(&a, b.try_clone().expect("clone")),
        burst(&b, a.try_clone().expect("clone")),
    );
    lab.impair(2, Duration::ZERO, 0.5).expect("impair");
    let lossy = (
        burst(&a, b.try_clone().expect("clone")),
        burst(&b, a.try_clone().expect("clone")),
    );
    eprintln!("of {BURST}: no loss {clean:?}, 50 % loss {lossy:?} (0 -> 2, 2 -> 0)");

    assert_eq!(clean, (BURST, BURST));
    // Binomial(1000, 0.5): 500 ± 16 (one standard deviation); 300..=700 is ±12.6 of them.
    for received in [lossy.0, lossy.1] {
        assert!(
            (300..=700).contains(&received),
            "{received} of {BURST} arrived"
        );
    }
}

#[test]
fn cut_partitions_a_host_and_heal_restores_it() {
    let lab = Lab::new(3).expect("lab");
    let listener = listen(&lab, 1);
    let target = listener.local_addr().expect("addr");
    let other = listen(&lab, 2);
    let other_target = other.local_addr().expect("addr");
    // The listener's backlog takes the connections; nothing needs to accept them.
    connect(&lab, 0, target, WAIT).expect("before the cut");

    lab.cut(1).expect("cut");
    for from in [0, 2] {
        let start = Instant::now();
        let error = connect(&lab, from, target, CUT_CONNECT).expect_err("through a cut");
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert!(start.elapsed() < CUT_CONNECT + Duration::from_secs(1));
    }
    connect(&lab, 0, other_target, WAIT).expect("the others still talk");

    lab.heal(1).expect("heal");
    connect(&lab, 0, target, WAIT).expect("after healing");
    connect(&lab, 2, target, WAIT).expect("after healing");
    drop((listener, other));
}

#[tokio::test]
async fn hosts_file_gives_a_name_several_addresses() {
    let lab = Lab::new(3).expect("lab");
    let all: Vec<IpAddr> = (0..3).map(|i| lab.ip(i)).collect();
    let entries: Vec<(&str, IpAddr)> = all.iter().map(|&a| ("cluster", a)).collect();
    lab.hosts_file(0, &entries).expect("hosts file");
    let want: BTreeSet<IpAddr> = all.iter().copied().collect();

    let args = ["ahostsv4", "cluster"].map(str::to_owned);
    let mut getent = lab
        .spawn(0, "getent", Path::new("getent"), &args)
        .expect("getent");
    let mut found = BTreeSet::new();
    while let Some(line) = getent.stdout_line(WAIT).await.expect("line") {
        let addr = line.split_whitespace().next().expect("address");
        found.insert(addr.parse::<IpAddr>().expect("an address"));
    }
    assert_eq!(getent.wait(WAIT).await.expect("exit"), Some(0));
    assert_eq!(found, want, "getent ahostsv4 cluster");

    // What tokio::net::lookup_host finds in the namespace (bin/lab_lookup.rs).
    let exe = Path::new(env!("CARGO_BIN_EXE_lab-lookup"));
    let mut lookup = lab
        .spawn(0, "lookup", exe, &["cluster:7000".to_owned()])
        .expect("lookup");
    let mut resolved = BTreeSet::new();
    while let Some(line) = lookup.stdout_line(WAIT).await.expect("line") {
        if let Some(addr) = line.strip_prefix("resolved ") {
            resolved.insert(addr.parse::<SocketAddr>().expect("an address"));
        }
    }
    assert_eq!(lookup.wait(WAIT).await.expect("exit"), Some(0));
    let want: BTreeSet<SocketAddr> = want.iter().map(|&a| SocketAddr::new(a, 7000)).collect();
    assert_eq!(resolved, want, "lookup_host in the namespace");

    // The other hosts keep this machine's hosts file.
    assert!(!Path::new("/etc/netns").join(lab.namespace(1)).exists());
}

/// The lab's namespaces present now, and its `/etc/netns` directories.
fn leftovers(names: &[String]) -> Vec<String> {
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let present: BTreeSet<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names
        .iter()
        .filter(|n| {
            present.contains(n.as_str()) || Path::new("/etc/netns").join(n.as_str()).exists()
        })
        .cloned()
        .collect()
}

/// Every namespace of `lab`.
fn names(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = (0..lab.hosts())
        .map(|i| lab.namespace(i).to_owned())
        .collect();
    names.push(lab.router().to_owned());
    names
}

#[test]
fn drop_removes_everything_the_lab_made() {
    let lab = Lab::new(2).expect("lab");
    lab.impair(0, Duration::from_millis(5), 0.01)
        .expect("impair");
    lab.cut(1).expect("cut");
    lab.hosts_file(0, &[("me", lab.ip(0))]).expect("hosts file");
    lab.hosts_file(1, &[("me", lab.ip(1))]).expect("hosts file");
    let names = names(&lab);
    assert_eq!(leftovers(&names), names, "all there while the lab lives");
    drop(lab);
    assert_eq!(leftovers(&names), Vec::<String>::new());
}

#[test]
fn a_panic_in_a_test_still_removes_the_lab() {
    let (tx, rx) = mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let lab = Lab::new(2).expect("lab");
        lab.impair(1, Duration::from_millis(5), 0.0)
            .expect("impair");
        tx.send(names(&lab)).expect("send");
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let names = rx.recv().expect("names");
    assert_eq!(leftovers(&names), Vec::<String>::new());
}

#[test]
fn a_new_lab_removes_the_labs_of_dead_processes() {
    // A pid that was alive and is not any more.
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    let pid = gone.id();
    gone.wait().expect("wait");
    let stale = [format!("dl{pid}x0r"), format!("dl{pid}x0h0")];
    for name in &stale {
        let out = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .expect("ip netns add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::create_dir_all(Path::new("/etc/netns").join(&stale[1])).expect("etc dir");
    std::fs::write(Path::new("/etc/netns").join(&stale[1]).join("hosts"), "").expect("hosts");
    // (Another test's new lab may sweep them first: either way they must be gone below.)

    let lab = Lab::new(1).expect("lab");
    assert_eq!(leftovers(&stale), Vec::<String>::new());
    // Its own are not stale.
    assert_eq!(leftovers(&names(&lab)), names(&lab));
}
