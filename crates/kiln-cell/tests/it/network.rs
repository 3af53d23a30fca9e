//! The cell's container network with real runc, ip and nft: 8080 inside
//! and the host port outside; two instances served through the router;
//! no way from a container to the host's services or another container;
//! DNS through the relay; the outside through NAT; nothing left after 100
//! create/destroy cycles; a cell that died without cleaning up (`kill -9`)
//! removes its leftovers at the next start; a host port something else
//! holds is passed over.

use crate::support::*;
use kiln_bbs::BbsClient;
use kiln_cell::ContainerRuntime;
use kiln_cell::network::{CellNetwork, Names};
use kiln_cell::runtime::{BindMount, ContainerSpec, Limits, ProcessSpec};
use kiln_model::ActualLrpState;
use kiln_model::bbs::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The app of the isolation test: serves its instance index, and on
/// request tries a connection, a name lookup, or a bind, and says how it
/// went.
const PROBE_APP: &str = r#"
import http.server, os, socket, threading, urllib.parse

def connect(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "refused" if e.errno == 111 else "error %s" % e.errno

held = []
def bind(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(8)
    held.append(s)
    def serve():
        while True:
            c, _ = s.accept()
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nimpostor")
            c.close()
    threading.Thread(target=serve, daemon=True).start()
    return "bound"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/connect":
            body = connect(q["host"], q["port"])
        elif url.path == "/resolve":
            try:
                body = socket.gethostbyname(q["name"])
            except OSError as e:
                body = "error %s" % e
        elif url.path == "/bind":
            try:
                body = bind(q["port"])
            except OSError as e:
                body = "error %s" % e
        else:
            body = "instance " + os.environ["CF_INSTANCE_INDEX"]
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// The address every name resolves to in these tests (TEST-NET-2: no
/// traffic is ever sent to it).
const ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn python_available(test: &str) -> bool {
    if Path::new("/usr/bin/python3").is_file() {
        return true;
    }
    if std::env::var("KILN_REQUIRE_RUNC").as_deref() == Ok("1") {
        panic!("{test}: KILN_REQUIRE_RUNC=1 but python3 is missing");
    }
    eprintln!("\n!!!!!!!! SKIPPING {test}: python3 is missing !!!!!!!!\n");
    false
}

/// A DNS server on 127.0.0.1 that answers every A query with [`ANSWER`]
/// and everything else with no records; counts the queries.
async fn dns_responder() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            let q = &buf[..n];
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            let end = end + 5; // the root label, QTYPE, QCLASS
            if end > n {
                continue;
            }
            let is_a = q[end - 4..end - 2] == [0, 1];
            let mut answer = vec![q[0], q[1], 0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0];
            answer.extend_from_slice(&q[12..end]);
            if is_a {
                answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                answer.extend_from_slice(&ANSWER.octets());
            }
            let _ = socket.send_to(&answer, from).await;
        }
    });
    (addr, queries)
}

async fn get(url: &str, host: Option<&str>) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(host) = host {
        request = request.header("Host", host);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// A TCP listener that counts what it accepts.
async fn counting_listener(addr: (Ipv4Addr, u16)) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_listen_on_8080_are_routed_and_reach_neither_the_host_nor_each_other() {
    let test = "instances_listen_on_8080_are_routed_and_reach_neither_the_host_nor_each_other";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let (dns, dns_queries) = dns_responder().await;
    let blobs = BlobServer::start().await;
    let droplet = tgz_of(&[("./app/probe.py", 0o644, PROBE_APP)]);
    let checksum = sha256(&droplet);
    blobs.put("droplet", droplet);
    let network = test_network(vec![dns]);
    let gateway = network.subnet.nth(1);
    let cell = TestCell::start_with(63400..63410, Some(network.clone())).await;

    // The router, as the server runs it, in front of the cell's instances.
    let router_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = router_listener.local_addr().unwrap();
    let router_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(kiln_router::run(
        kiln_router::RouterConfig::default(),
        router_listener,
        None,
        Arc::new(cell.bbs.clone()),
        cell.logs.clone(),
        router_stop.clone(),
    ));

    let mut app = desired_lrp(
        &cell.stack,
        "iso",
        sh("cd /home/vcap/app && exec python3 probe.py"),
    );
    app.instances = 2;
    app.routes = vec!["iso.localhost".into()];
    app.setup = vec![DownloadAction {
        artifact: "droplet".into(),
        from: blobs.blob_url("droplet"),
        to: "/home/vcap".into(),
        kind: ArtifactKind::Tgz,
        cache_key: None,
        checksum: Some(Checksum {
            algorithm: "sha256".into(),
            value: checksum,
        }),
        optional: false,
    }];
    cell.bbs.desire_lrp(app).await.unwrap();
    let both = eventually(
        "both instances RUNNING",
        Duration::from_secs(60),
        || async {
            let mut running: Vec<ActualLrp> = cell
                .bbs
                .actual_lrps(kiln_bbs::ActualLrpFilter {
                    process_guid: Some("iso".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.state == ActualLrpState::Running)
                .collect();
            running.sort_by_key(|a| a.key.index);
            (running.len() == 2).then_some(running)
        },
    )
    .await;
    let net = |i: usize| both[i].net_info.clone().unwrap();
    let (a, b) = (net(0), net(1));
    for n in [&a, &b] {
        assert_eq!(n.address, "127.0.0.1");
        assert_eq!(n.ports[0].container_port, 8080);
        let ip: Ipv4Addr = n.instance_address.parse().unwrap();
        assert!(network.subnet.contains(ip), "{ip}");
    }
    let a_url = format!("http://127.0.0.1:{}", a.ports[0].host_port);
    let b_port = b.ports[0].host_port;

    // The mapping outside; the container's address from the host.
    assert_eq!(get(&format!("{a_url}/"), None).await, "instance 0");
    assert_eq!(
        get(&format!("http://127.0.0.1:{b_port}/"), None).await,
        "instance 1"
    );
    assert_eq!(
        get(&format!("http://{}:8080/", b.instance_address), None).await,
        "instance 1"
    );

    // Both instances behind one route.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let body = eventually("the route", Duration::from_secs(10), || async {
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("http://{router}/"))
                .header("Host", "iso.localhost")
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(r.text().await.ok()?)
        })
        .await;
        seen.insert(body);
    }
    assert_eq!(
        seen,
        ["instance 0".to_string(), "instance 1".to_string()].into(),
        "both instances through the router"
    );

    // From inside A. The control: a connection that can succeed does.
    let connect = |host: String, port: u16| {
        let url = format!("{a_url}/connect?host={host}&port={port}");
        async move { get(&url, None).await }
    };
    assert_eq!(connect(a.instance_address.clone(), 8080).await, "connected");
    // The host's loopback services: 127.0.0.1 is the container's own.
    let (loopback_port, loopback_hits) = counting_listener((Ipv4Addr::LOCALHOST, 0)).await;
    assert_eq!(connect("127.0.0.1".into(), loopback_port).await, "refused");
    // A service on the host's side of the bridge (the gateway address).
    let (gw_port, gw_hits) = counting_listener((gateway, 0)).await;
    let verdict = connect(gateway.to_string(), gw_port).await;
    assert_ne!(verdict, "connected", "a container reached the host");
    // Another container, directly and through the host port hairpin.
    let verdict = connect(b.instance_address.clone(), 8080).await;
    assert_ne!(verdict, "connected", "a container reached another one");
    let verdict = connect(gateway.to_string(), b_port).await;
    assert_ne!(
        verdict, "connected",
        "a container reached another's host port"
    );
    assert_eq!(loopback_hits.load(Ordering::SeqCst), 0);
    assert_eq!(gw_hits.load(Ordering::SeqCst), 0);

    // DNS works inside, through the relay to the upstream on loopback.
    assert_eq!(
        get(&format!("{a_url}/resolve?name=kiln-test.example"), None).await,
        ANSWER.to_string()
    );
    assert!(dns_queries.load(Ordering::SeqCst) >= 1);

    // A binding B's host port binds it in A's namespace only: the host
    // port still leads to B.
    assert_eq!(
        get(&format!("{a_url}/bind?port={b_port}"), None).await,
        "bound"
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{b_port}/"), None).await,
        "instance 1"
    );

    // Nor can a program on the host take an instance's host port.
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", b_port)).is_err(),
        "the cell holds its instances' host ports"
    );
    // The port is mapped on the cell's address only: on another address
    // of the machine it leads nowhere.
    assert!(
        tokio::net::TcpStream::connect((gateway, b_port))
            .await
            .is_err(),
        "a host port is mapped on the cell's address only"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", b_port)).is_err(),
        "the cell holds its instances' host ports on its address"
    );

    router_stop.cancel();
    cell.bbs.remove_desired_lrp("iso").await.unwrap();
    let names = Names::for_cell(&cell.config.cell_id);
    // What is left is the namespace made ahead for the next container.
    eventually("instances gone", Duration::from_secs(20), || async {
        (cell.containers().await.is_empty() && counts(&names).netns == 1).then_some(())
    })
    .await;
    let ready = Counts {
        veths: 1,
        netns: 1,
        mounts: 1,
        port_mappings: 0,
    };
    assert_eq!(counts(&names), ready);
    let mut cell = cell;
    cell.stop_cell().await;
    assert_eq!(
        counts(&names),
        Counts::default(),
        "the namespace made ahead goes at shutdown"
    );
    assert!(!link_exists(&names.bridge), "the bridge goes at shutdown");
    assert!(!table_exists(&names.table), "the table goes at shutdown");
    cell.shutdown().await;
}

/// What one cell's network holds on this machine.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    veths: usize,
    netns: usize,
    mounts: usize,
    port_mappings: usize,
}

fn command(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn counts(names: &Names) -> Counts {
    let prefix = names.netns("");
    let links = command("ip", &["-o", "link", "show"]);
    let table = command("nft", &["list", "map", "inet", &names.table, "ports"]);
    let elements = table
        .split_once("elements = {")
        .map(|(_, rest)| rest.split('}').next().unwrap_or("").matches(':').count())
        .unwrap_or(0);
    Counts {
        veths: links
            .lines()
            .filter(|l| l.contains(&format!(": {}", names.veth_prefix())))
            .count(),
        netns: std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("/run/netns/{prefix}")))
            .count(),
        port_mappings: elements,
    }
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn table_exists(name: &str) -> bool {
    command("nft", &["list", "tables"]).contains(&format!("table inet {name}\n"))
}

/// The cgroups of containers whose id starts with `prefix`, in any
/// hierarchy (v1 and v2).
fn cgroups(prefix: &str) -> usize {
    let mut n = 0;
    let parent = kiln_cell::runtime::oci::CGROUP_PARENT.trim_start_matches('/');
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(parent)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(entries.flatten().map(|e| e.path().join(parent)));
    }
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(dir) {
            n += entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count();
        }
    }
    n
}

fn true_spec(dir: &Path, rootfs: &Path, id: &str, netns: &Path) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        bundle: dir.join(id),
        rootfs: rootfs.to_path_buf(),
        writable_root: false,
        hostname: id.into(),
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
            uid: 2000,
            gid: 2000,
            nofile: 1024,
        },
        mounts: vec![BindMount {
            source: "/usr".into(),
            destination: "/usr".into(),
            read_only: true,
        }],
        limits: Limits {
            memory_mb: 64,
            pids: 64,
            ..Limits::default()
        },
        network: Some(netns.to_path_buf()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaks_after_100_create_destroy_cycles() {
    if !runc_available("nothing_leaks_after_100_create_destroy_cycles") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stack = kiln_cell::stack::build_host_stack(&dir.path().join("stack"), "leak-test").unwrap();
    let cell_id = format!("leak-{}", &guid()[..8]);
    let _cleanup = NetworkCleanup(Some(cell_id.clone()));
    let network = CellNetwork::setup(
        &cell_id,
        &test_network(vec![]),
        Some(Ipv4Addr::LOCALHOST),
        &dir.path().join("net"),
    )
    .await
    .unwrap();
    let runtime = kiln_cell::RuncRuntime::new(RUNC.into(), dir.path().join("runc"));
    let names = network.names().clone();
    let id_prefix = format!("{cell_id}-c");
    let before = (counts(&names), cgroups(&id_prefix));
    assert_eq!(before, (Counts::default(), 0));

    // Host ports above the cells' range and the kernel's ephemeral range.
    let started = Instant::now();
    for i in 0..100u16 {
        let id = format!("{id_prefix}{i}");
        let attachment = network
            .attach(&id, Some(network.hold_port(62100 + i).unwrap()))
            .await
            .unwrap();
        assert_eq!(counts(&names).port_mappings, 1, "cycle {i}");
        let spec = true_spec(dir.path(), &stack.rootfs, &id, &attachment.netns);
        let process = runtime.create_and_run(&spec).await.unwrap();
        assert_eq!(process.exit.await.unwrap(), 0, "cycle {i}");
        runtime.destroy(&id).await.unwrap();
        network.detach(&id).await;
    }
    eprintln!(
        "MEASURED 100 create/run/destroy cycles with networking: {:?}",
        started.elapsed()
    );
    let after = (counts(&names), cgroups(&id_prefix));
    assert_eq!(
        after, before,
        "interfaces, namespaces, mounts, mappings, cgroups"
    );
    assert!(runtime.list().await.unwrap().is_empty());
    network.teardown().await;
    assert!(!link_exists(&names.bridge));
    assert!(!table_exists(&names.table));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_network_left_by_a_dead_cell_is_removed_and_recreated_at_start() {
    let test = "a_cell_network_left_by_a_dead_cell_is_removed_and_recreated_at_start";
    if !runc_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cell_id = format!("dead-{}", &guid()[..8]);
    let _cleanup = NetworkCleanup(Some(cell_id.clone()));
    let config = test_network(vec![]);
    let first = CellNetwork::setup(&cell_id, &config, Some(Ipv4Addr::LOCALHOST), dir.path())
        .await
        .unwrap();
    let names = first.names().clone();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let port = first.hold_port(62200 + i as u16).unwrap();
        first.attach(id, Some(port)).await.unwrap();
    }
    let left = counts(&names);
    assert_eq!(
        (left.veths, left.netns, left.mounts, left.port_mappings),
        (3, 3, 3, 3)
    );
    // What `kill -9` leaves: no teardown ran. (The dropped relay lets go
    // of its socket on its next poll; a killed process would at once.)
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = CellNetwork::setup(&cell_id, &config, Some(Ipv4Addr::LOCALHOST), dir.path())
        .await
        .unwrap();
    assert_eq!(counts(&names), Counts::default(), "leftovers removed");
    assert!(link_exists(&names.bridge) && table_exists(&names.table));
    // And the new network works: the same names can be used again.
    let a = second
        .attach("a", Some(second.hold_port(62200).unwrap()))
        .await
        .unwrap();
    assert!(config.subnet.contains(a.ip));
    second.detach("a").await;

    // Bad input changes nothing: an overlapping subnet for another cell
    // is refused before anything is created.
    let other = format!("other-{}", &guid()[..8]);
    let _other_cleanup = NetworkCleanup(Some(other.clone()));
    let err = CellNetwork::setup(&other, &config, Some(Ipv4Addr::LOCALHOST), dir.path())
        .await
        .err()
        .expect("an overlapping subnet is refused");
    assert!(err.to_string().contains("overlaps"), "{err}");
    assert!(!link_exists(&Names::for_cell(&other).bridge));
    assert!(!table_exists(&Names::for_cell(&other).table));

    second.teardown().await;
    assert_eq!(counts(&names), Counts::default());
    assert!(!link_exists(&names.bridge));
}

/// A network namespace the test creates to stand for "the outside": a
/// veth from the host to it, an address pair on a /24 of its own, and a
/// TCP server in it that answers each connection with the peer address it
/// sees. Removed on drop.
struct Outside {
    netns: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    ip: Ipv4Addr,
    port: u16,
    server: std::process::Child,
}

impl Outside {
    fn create() -> Outside {
        let tag = &guid()[..8];
        let (netns, host_veth) = (format!("kiln-test-out-{tag}"), format!("ko{tag}"));
        let subnet = test_subnet();
        let (host_ip, ip) = (subnet.nth(1), subnet.nth(2));
        let batch = format!(
            "netns add {netns}\nlink add {host_veth} type veth peer name eth0 netns {netns}\n\
             addr add {host_ip}/24 dev {host_veth}\nlink set {host_veth} up\n"
        );
        let inside = format!("addr add {ip}/24 dev eth0\nlink set eth0 up\nlink set lo up\n");
        for (args, input) in [
            (vec!["-batch", "-"], batch),
            (vec!["-n", &netns, "-batch", "-"], inside),
        ] {
            let mut child = std::process::Command::new("ip")
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "ip {args:?}");
        }
        let port = 18080;
        let script = format!(
            "import socket\ns = socket.socket()\ns.bind(('{ip}', {port}))\ns.listen(8)\n\
             while True:\n    c, a = s.accept()\n    c.sendall(a[0].encode())\n    c.close()\n"
        );
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", &script])
            .spawn()
            .unwrap();
        Outside {
            netns,
            host_veth,
            host_ip,
            ip,
            port,
            server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = command("ip", &["link", "del", &self.host_veth]);
        let _ = command("ip", &["netns", "del", &self.netns]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_the_outside_through_nat() {
    let test = "containers_reach_the_outside_through_nat";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let outside = Outside::create();
    let cell = TestCell::start(63420..63430).await;
    let script = format!(
        "python3 -c \"import socket, time\n\
         for _ in range(50):\n    \
             try:\n        c = socket.create_connection(('{ip}', {port}), timeout=2); break\n    \
             except OSError: time.sleep(0.1)\n\
         open('/tmp/result', 'w').write(c.recv(100).decode())\"",
        ip = outside.ip,
        port = outside.port,
    );
    let mut def = task_definition(&cell.stack, "nat-logs", sh(&script));
    def.result_file = "/tmp/result".into();
    cell.desire_task("nat-task", def).await;
    let task = cell
        .completed_task("nat-task", Duration::from_secs(60))
        .await;
    assert!(
        !task.failed,
        "{}: {:?}",
        task.failure_reason,
        cell.logs.lines("nat-logs")
    );
    // The outside sees the host's address on its link, not the
    // container's: the connection was masqueraded.
    assert_eq!(task.result, outside.host_ip.to_string());
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cell_network_instances_listen_on_their_host_port() {
    let test = "without_a_cell_network_instances_listen_on_their_host_port";
    if !runc_available(test) || !python_available(test) {
        return;
    }
    let cell = TestCell::start_with(63440..63450, None).await;
    let lrp = desired_lrp(
        &cell.stack,
        "hostnet",
        sh(
            "cd /tmp && echo \"$PORT $CF_INSTANCE_INTERNAL_IP\" > index.html && exec python3 -m http.server $PORT",
        ),
    );
    cell.bbs.desire_lrp(lrp).await.unwrap();
    let actual = cell.running("hostnet").await;
    let net = actual.net_info.unwrap();
    let port = net.ports[0].host_port;
    assert_eq!(net.ports[0].container_port, port);
    assert_eq!(net.instance_address, "127.0.0.1");
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/index.html"), None).await,
        format!("{port} 127.0.0.1\n")
    );
    assert!(!link_exists(&Names::for_cell(&cell.config.cell_id).bridge));
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_held_elsewhere_is_passed_over_not_crashed_on() {
    let test = "a_host_port_held_elsewhere_is_passed_over_not_crashed_on";
    if !runc_available(test) {
        return;
    }
    // The first port of the range is bound, not listening, with
    // SO_REUSEADDR: a bind test with the same option passes over it, the
    // cell network's hold (without) does not. The two must be one step.
    let first = 63230;
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseaddr(true).unwrap();
    other
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, first)))
        .unwrap();
    let cell = TestCell::start(first..first + 2).await;
    let mut lrp = desired_lrp(&cell.stack, "passes-over", sh("exec sleep 600"));
    lrp.health_check = HealthCheck::Process;
    cell.bbs.desire_lrp(lrp).await.unwrap();
    let actual = cell.running("passes-over").await;
    assert_eq!(actual.crash_count, 0, "{}", actual.crash_reason);
    assert_eq!(actual.net_info.unwrap().ports[0].host_port, first + 1);
    cell.bbs.remove_desired_lrp("passes-over").await.unwrap();
    eventually("the container gone", Duration::from_secs(15), || async {
        cell.containers().await.is_empty().then_some(())
    })
    .await;
    cell.shutdown().await;
}
