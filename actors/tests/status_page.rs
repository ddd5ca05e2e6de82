//! The status page in a real browser: a small cluster of `duologue node` processes on
//! 127.0.0.1 (`hub` hosts `chat-room:general` and serves its admin address, `edge` joins
//! by gossip) with two `duologue chat` members talking, and a headless Chromium that loads
//! the page from `hub`, whose DOM (after the page's script ran) must show the members,
//! the sessions with their states, a nonzero rate and a chart with points. A screenshot
//! is kept at `<target dir>/test-artifacts/status-page.png` (the test prints where; run
//! with `-- --nocapture` to see it).
//!
//! Chromium comes from the system (`/usr/bin/chromium`, `chromium` on the `PATH`, or
//! `$DUOLOGUE_CHROMIUM`); without it the test fails saying how to install it, never a
//! silent skip (`.ci/test` installs it where missing). Every wait is bounded; the nodes,
//! the members and every Chromium process are killed on every exit path; the browser's
//! profile directory is removed.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use duologue_testkit::{ChildGuard, NodeProcess, SecretDir};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_util::task::AbortOnDropHandle;

/// Bound of the cluster and the room reaching the state the page should show.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// Bound of one Chromium run (a cold start on a busy two-core machine is slow).
const BROWSER_WAIT: Duration = Duration::from_secs(90);
/// How many seconds of nonzero rate the node's history holds before the page is loaded,
/// so the chart draws a line and not a dot.
const RATE_POINTS: usize = 4;
/// The screenshot's size, in CSS pixels at scale 1.
const WINDOW: (u32, u32) = (1280, 1000);
/// Headless, offline and quiet: without the background-networking flags Chromium keeps
/// trying to reach Google's services.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    // Virtual time runs the page's timers (a refresh a second) without waiting for them
    // in real time; it pauses while status.json is being fetched.
    "--virtual-time-budget=5000",
];

#[tokio::test]
async fn the_status_page_shows_members_sessions_rates_and_entities_in_a_browser() {
    let browser = chromium();
    let secrets = SecretDir::create().unwrap();
    let secret = secrets.secret().display().to_string();
    let mut hub = NodeProcess::start(
        &duologue_exe(),
        "hub",
        &cluster_args(
            &secret,
            &["--metrics", "127.0.0.1:0", "--actor", "chat-room:general"],
        ),
        WAIT,
    )
    .await
    .expect("hub starts");
    let gossip = stdout_after(&mut hub.child, "gossip on ").await;
    let admin: SocketAddr = stdout_after(&mut hub.child, "metrics on http://")
        .await
        .parse()
        .expect("an admin address");
    let edge = NodeProcess::start(
        &duologue_exe(),
        "edge",
        &cluster_args(&secret, &["--seed", &gossip]),
        WAIT,
    )
    .await
    .expect("edge starts");

    let mut talkers = Vec::new();
    let mut members = Vec::new();
    for (user, every) in [("alice", 50), ("bob", 120)] {
        let mut member = chat_member(user, &hub.addr.to_string(), &secret);
        member.stderr_until("joined", WAIT).await.unwrap();
        talkers.push(keep_talking(&mut member, Duration::from_millis(every)));
        members.push(member);
    }

    let started = Instant::now();
    let status = settled_status(admin).await;
    eprintln!(
        "status_page: cluster and room settled in {:.1?}, {} history points",
        started.elapsed(),
        status["history"].as_array().map_or(0, Vec::len)
    );

    let url = format!("http://{admin}/");
    let started = Instant::now();
    let dom = run_chromium(&browser, &["--dump-dom"], &url).await;
    eprintln!("status_page: --dump-dom took {:.1?}", started.elapsed());
    check_page(&dom, &hub, &edge);

    let artifact = artifact_path();
    std::fs::create_dir_all(artifact.parent().unwrap()).unwrap();
    // A stale screenshot must not pass for this run's.
    let _ = std::fs::remove_file(&artifact);
    let started = Instant::now();
    run_chromium(
        &browser,
        &[
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            &format!("--screenshot={}", artifact.display()),
        ],
        &url,
    )
    .await;
    eprintln!("status_page: --screenshot took {:.1?}", started.elapsed());
    check_png(&artifact, WINDOW);
    println!("status page screenshot: {}", artifact.display());
}

/// How to get the browser, for the failure when there is none.
const INSTALL_CHROMIUM: &str = "the status page test needs Chromium (/usr/bin/chromium, \
    `chromium` on the PATH, or DUOLOGUE_CHROMIUM=/path/to/chromium): on Debian, \
    `apt-get install --no-install-recommends chromium` (.ci/test does this where it is \
    missing)";

/// The browser: `$DUOLOGUE_CHROMIUM`, `/usr/bin/chromium` or `chromium` on the `PATH`.
/// Panics saying how to install it when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("DUOLOGUE_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "DUOLOGUE_CHROMIUM={} is not a file; {INSTALL_CHROMIUM}",
            path.display()
        );
        return path;
    }
    let system = Path::new("/usr/bin/chromium");
    if system.is_file() {
        return system.to_owned();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no Chromium found; {INSTALL_CHROMIUM}"))
}

/// A node's flags in the test's cluster (gossiping fast, as on one machine), then `extra`.
fn cluster_args(secret: &str, extra: &[&str]) -> Vec<String> {
    [
        "--secret-file",
        secret,
        "--gossip-listen",
        "127.0.0.1:0",
        "--gossip-interval",
        "200ms",
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect()
}

/// The rest of a node's next stdout line, which must start with `prefix`.
async fn stdout_after(node: &mut ChildGuard, prefix: &str) -> String {
    let line = node
        .stdout_line(WAIT)
        .await
        .unwrap()
        .expect("the node is running");
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, the node said {line:?}"))
        .trim()
        .to_owned()
}

/// `duologue chat` as `user` in room `general` on `peer`.
fn chat_member(user: &str, peer: &str, secret: &str) -> ChildGuard {
    let args = [
        "chat",
        "--peer",
        peer,
        "--room",
        "general",
        "--user",
        user,
        "--secret-file",
        secret,
    ]
    .map(String::from);
    ChildGuard::spawn(user, &duologue_exe(), &args).expect("duologue chat starts")
}

/// Keeps `member` talking, a line every `every`, and reads what it hears so its stdout
/// pipe never fills; until the handle drops or the member ends.
fn keep_talking(member: &mut ChildGuard, every: Duration) -> AbortOnDropHandle<()> {
    let user = member.name().to_owned();
    let mut stdin = member.stdin.take().expect("stdin piped");
    let mut heard = member.stdout.take().expect("stdout piped");
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for n in 1u64.. {
            tokio::select! {
                _ = tick.tick() => {
                    let line = format!("{user} says {n}\n");
                    if stdin.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                line = heard.next_line() => {
                    if !matches!(line, Ok(Some(_))) {
                        return;
                    }
                }
            }
        }
    }))
}

/// `GET path` from `addr` over HTTP/1.0; the body of a 200 answer.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send the request: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read the answer: {e}"))?;
    let response = String::from_utf8(response).map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    match head.split_whitespace().nth(1) {
        Some("200") => Ok(body.to_owned()),
        _ => Err(format!("GET {path}: {head}")),
    }
}

/// Polls hub's `/status.json` until what the page should show holds: both nodes up, both
/// members' sessions active, and [`RATE_POINTS`] seconds of messages in. Panics with the
/// last status seen after [`SETTLE_WAIT`].
async fn settled_status(admin: SocketAddr) -> Value {
    let deadline = Instant::now() + SETTLE_WAIT;
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        poll.tick().await;
        let answer = tokio::time::timeout(WAIT, http_get(admin, "/status.json")).await;
        let body = match answer {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                last = e;
                continue;
            }
            Err(_) => {
                last = format!("/status.json did not answer within {WAIT:?}");
                continue;
            }
        };
        let status: Value = serde_json::from_str(&body).expect("status.json is JSON");
        if settled(&status) {
            return status;
        }
        last = body;
    }
    panic!("the hub's status never settled within {SETTLE_WAIT:?}; last: {last}");
}

fn settled(status: &Value) -> bool {
    let list = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    let up: HashSet<String> = list("members")
        .iter()
        .filter(|m| m["state"] == "up")
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    let active: HashSet<String> = list("sessions")
        .iter()
        .filter(|s| s["state"] == "active" && s["actor"] == "general")
        .filter_map(|s| s["peer"].as_str().map(str::to_owned))
        .collect();
    let history = list("history");
    let talking = history.len() >= RATE_POINTS
        && history[history.len() - RATE_POINTS..]
            .iter()
            .all(|p| p["messages_in_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    ["hub", "edge"].iter().all(|n| up.contains(*n))
        && ["chat-alice", "chat-bob"]
            .iter()
            .all(|p| active.contains(*p))
        && talking
}

/// Runs Chromium with the test's flags, `args` and `url`, to its end within
/// [`BROWSER_WAIT`]; its stdout. Chromium runs in a process group of its own, killed
/// whole when this returns or panics, and with a fresh profile directory removed after.
async fn run_chromium(browser: &Path, args: &[&str], url: &str) -> String {
    let profile = TempDir::create("chromium-profile");
    let mut command = Command::new(browser);
    command
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let pid = child.id().expect("a pid while it runs");
    let _group = ProcessGroup(Pid::from_raw(i32::try_from(pid).expect("a pid fits i32")));
    let output = tokio::time::timeout(BROWSER_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish within {BROWSER_WAIT:?}"))
        .expect("Chromium's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Chromium failed ({}); the end of its stderr:\n{}",
        output.status,
        tail(&stderr, 20)
    );
    String::from_utf8(output.stdout).expect("Chromium's stdout is UTF-8")
}

/// Checks what the page shows, from its DOM after its script ran.
fn check_page(dom: &str, hub: &NodeProcess, edge: &NodeProcess) {
    let body = opening_tag(dom, "<body").unwrap_or_else(|| panic!("no <body> in {dom}"));
    assert_eq!(
        attribute(body, "data-loaded"),
        Some("true"),
        "the page never showed a status: {dom}"
    );
    assert_eq!(text(dom, "node"), "hub", "the node's name");
    assert_eq!(text(dom, "error"), "", "no error shown");

    let members = rows(dom, "members");
    let member = |name: &str| {
        members
            .iter()
            .find(|row| row.first().is_some_and(|c| c.starts_with(name)))
            .unwrap_or_else(|| panic!("no member {name} in {members:?}"))
    };
    for (name, node) in [("hub", hub), ("edge", edge)] {
        let row = member(name);
        assert_eq!(row[1], node.addr.to_string(), "{name}'s address: {row:?}");
        assert_eq!(row[2], "up", "{name}'s state: {row:?}");
    }
    assert_eq!(
        member("hub")[0],
        "hubthis node",
        "hub is marked as the page's node"
    );
    assert_eq!(member("edge")[0], "edge", "edge is not marked");
    assert_eq!(member("hub")[3], "general", "hub hosts the room");

    // `duologue node` hosts the carts (in memory, without --state): the kind's figures.
    let entities = rows(dom, "entities");
    let cart = entities
        .iter()
        .find(|row| row.first().is_some_and(|c| c == "cart"))
        .unwrap_or_else(|| panic!("no kind cart in {entities:?}"));
    assert_eq!(cart.len(), 11, "{cart:?}");
    assert!(number(&cart[1]) > 0, "hub owns shards of cart: {cart:?}");
    assert_eq!(cart[9..], ["0", "0"], "no claims without a store: {cart:?}");

    let sessions = rows(dom, "sessions");
    for peer in ["chat-alice", "chat-bob"] {
        let row = sessions
            .iter()
            .find(|row| row.first().is_some_and(|c| c == peer))
            .unwrap_or_else(|| panic!("no session with {peer} in {sessions:?}"));
        assert_eq!(row[1..4], ["general", "acceptor", "active"], "{row:?}");
        assert!(
            number(&row[9]) > 0,
            "{peer}'s session carried nothing: {row:?}"
        );
    }
    assert_eq!(
        number(&text(dom, "session-count")),
        sessions.len() as u64,
        "the session count"
    );
    assert!(number(&text(dom, "total-in")) > 0, "messages in, in all");
    assert!(number(&text(dom, "rate-in")) > 0, "messages in per second");
    let chart = tag_with_id(dom, "chart");
    let points = attribute(chart, "data-points").map_or(0, number);
    assert!(points >= RATE_POINTS as u64, "the chart's points: {chart}");
}

/// Checks `path` is a PNG of `size` pixels, of a size that holds more than a blank page.
fn check_png(path: &Path, size: (u32, u32)) {
    let png =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&png[12..16], b"IHDR", "the PNG's first chunk");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), size, "the screenshot's width and height");
    // A blank page of this size compresses to a few KiB; text, tables and a chart do not.
    assert!(
        (20_000..10_000_000).contains(&png.len()),
        "a screenshot of {} bytes",
        png.len()
    );
}

/// Where the screenshot is kept: `test-artifacts/status-page.png` in the target dir.
fn artifact_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir")
        .join("test-artifacts")
        .join("status-page.png")
}

/// The opening tag (`<` to `>`) that starts with `start`.
fn opening_tag<'a>(dom: &'a str, start: &str) -> Option<&'a str> {
    let from = dom.find(start)?;
    let len = dom[from..].find('>')?;
    Some(&dom[from..=from + len])
}

/// The opening tag of the element with id `id`.
fn tag_with_id<'a>(dom: &'a str, id: &str) -> &'a str {
    &dom[tag_span(dom, id)]
}

/// Where the opening tag of the element with id `id` is in `dom`.
fn tag_span(dom: &str, id: &str) -> std::ops::Range<usize> {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let from = dom[..at].rfind('<').expect("the tag opens");
    let len = dom[from..].find('>').expect("the tag closes");
    from..from + len + 1
}

/// The value of attribute `name` in `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    let len = tag[from..].find('"')?;
    Some(&tag[from..from + len])
}

/// The text of the element with id `id`, inner tags dropped.
fn text(dom: &str, id: &str) -> String {
    let tag = tag_span(dom, id);
    let open = tag.end;
    let name: String = dom[tag.start + 1..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let close = open
        + dom[open..]
            .find(&format!("</{name}>"))
            .expect("the element closes");
    strip_tags(&dom[open..close])
}

/// The cells of every body row of table `id`, inner tags dropped.
fn rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let table = &dom[dom
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table #{id}"))..];
    let body = &table[table.find("<tbody").expect("a tbody")..];
    let body = &body[..body.find("</tbody>").expect("the tbody closes")];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let cell = &cell[cell.find('>').map_or(0, |i| i + 1)..];
                    strip_tags(cell.split("</td>").next().unwrap_or_default())
                })
                .collect()
        })
        .collect()
}

fn strip_tags(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_owned()
}

/// A count as the page shows it (`1,234`); 0 when it is not one.
fn number(shown: &str) -> u64 {
    shown.replace(',', "").trim().parse().unwrap_or(0)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(what: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("duologue-{what}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process group, killed (SIGKILL) when this drops: Chromium's renderer and helper
/// processes with it.
struct ProcessGroup(Pid);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // ESRCH once every process of the group has exited: nothing left to kill.
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}
