//! The cell's container network, as garden-runc's: every container (task
//! or instance) gets its own network namespace, joined by a veth pair to a
//! bridge the cell creates at start on a subnet of its own. An instance
//! listens on [`CONTAINER_PORT`] inside; a host port on the cell's address
//! is DNATed to it. Containers reach the outside through NAT, the host only
//! at the DNS relay on the gateway address, and other containers not at all
//! (isolated bridge ports, no routing between bridge ports).
//!
//! Everything a cell creates is named after a hash of its id, so a cell
//! finds (and removes) what a previous run left after `kill -9`, and cells
//! of several processes on one machine never touch each other's:
//! the bridge `kiln-<h>`, the nft table `inet kiln_<h>`, network
//! namespaces `/run/netns/kiln-<h>-<container id>`, host-side veths
//! `kv<h6><address index>`.
//!
//! Speed: a container costs two `ip -batch` runs (host side, then inside
//! the namespace) and, for an instance, one nft map element added in
//! parallel with them: no rule is added or removed per container. The
//! `ip` runs are done ahead: a namespace with its veth and address is kept
//! ready (named `kiln-<h>-ready<n>`), a container takes it and a new one is
//! made in the background ([`CellNetwork::refill`]); so a task's start
//! runs no command at all, an instance's only the nft element. A namespace
//! serves one container and is deleted with it.

pub mod dns;
mod nft;
pub mod subnet;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use subnet::IpPool;
pub use subnet::Subnet;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The port an instance listens on inside its namespace (`$PORT`), as on
/// Diego.
pub const CONTAINER_PORT: u16 = 8080;
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Namespaces kept ready: one covers a push (its staging task, then its
/// instance).
const READY_NAMESPACES: usize = 1;

/// The default cell network: garden-runc's default pool.
pub const DEFAULT_SUBNET: &str = "10.254.0.0/22";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub subnet: Subnet,
    /// Where the DNS relay forwards queries; empty means the nameservers
    /// of the host's `/etc/resolv.conf`.
    pub dns_servers: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("{0}")]
    Setup(String),
    #[error("no free address left in the cell network {0}")]
    Exhausted(Subnet),
    #[error("host port {port} is taken: {source}")]
    PortTaken {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} is attached already")]
    Attached(String),
}

/// The names of everything one cell creates.
#[derive(Debug, Clone)]
pub struct Names {
    pub bridge: String,
    pub table: String,
    netns_prefix: String,
    veth_prefix: String,
}

impl Names {
    pub fn for_cell(cell_id: &str) -> Names {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(cell_id.as_bytes()));
        Names {
            bridge: format!("kiln-{}", &h[..8]),
            table: format!("kiln_{}", &h[..8]),
            netns_prefix: format!("kiln-{}-", &h[..8]),
            veth_prefix: format!("kv{}", &h[..6]),
        }
    }

    pub fn netns(&self, id: &str) -> String {
        format!("{}{id}", self.netns_prefix)
    }

    /// Every host-side veth of the cell starts with it.
    pub fn veth_prefix(&self) -> &str {
        &self.veth_prefix
    }

    /// IFNAMSIZ allows 15 bytes: 2 + 6 + 4.
    fn veth(&self, index: u32) -> String {
        format!("{}{index:04x}", self.veth_prefix)
    }
}

/// One container's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The namespace file runc joins.
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    /// The host port mapped to the app's port (instances only).
    pub host_port: Option<u16>,
    veth: String,
    index: u32,
}

struct State {
    pool: IpPool,
    attached: HashMap<String, Attachment>,
    /// A socket bound, but not listening, on each mapped host port at the
    /// cell's address: it keeps any other program on the host from binding
    /// the port there and taking an instance's traffic. It must not listen:
    /// a connection that misses DNAT (the map element already gone while a
    /// router still dials the instance) is then refused at once and the
    /// router tries elsewhere, instead of waiting in a backlog nobody reads.
    held_ports: HashMap<String, tokio::net::TcpSocket>,
    /// Namespaces made ahead, and how many are being made.
    ready: Vec<Ready>,
    making: usize,
    /// Set by teardown: nothing more is made.
    closed: bool,
}

/// A host port bound for one container ([`CellNetwork::hold_port`]).
#[derive(Debug)]
pub struct HeldPort {
    port: u16,
    socket: tokio::net::TcpSocket,
}

/// A namespace with its veth, on the bridge, addressed, not yet used.
struct Ready {
    netns: String,
    veth: String,
    index: u32,
}

/// The cell's bridge, table, relay and attachments.
pub struct CellNetwork {
    names: Names,
    subnet: Subnet,
    /// Where host ports are mapped; `None`: on every local address.
    address: Option<Ipv4Addr>,
    resolv_conf: PathBuf,
    state: Mutex<State>,
    relay_stop: CancellationToken,
    relay: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Numbers the namespaces made ahead.
    next_ready: AtomicU64,
}

impl CellNetwork {
    /// Removes what a previous run of this cell left, then creates the
    /// bridge, the nft table, and the DNS relay; `dir` gets the
    /// containers' `resolv.conf`.
    ///
    /// Host ports are mapped on `address`, the cell's advertised address,
    /// or on every address of the machine when it has no IPv4 address (a
    /// host name).
    pub async fn setup(
        cell_id: &str,
        config: &NetworkConfig,
        address: Option<Ipv4Addr>,
        dir: &Path,
    ) -> Result<CellNetwork, NetworkError> {
        let names = Names::for_cell(cell_id);
        remove_leftovers(&names).await;
        refuse_overlap(&names, &config.subnet).await?;
        match CellNetwork::create(cell_id, names.clone(), config, address, dir).await {
            Ok(network) => Ok(network),
            Err(error) => {
                // A half-made network is no use to the next start either.
                remove_leftovers(&names).await;
                Err(error)
            }
        }
    }

    async fn create(
        cell_id: &str,
        names: Names,
        config: &NetworkConfig,
        address: Option<Ipv4Addr>,
        dir: &Path,
    ) -> Result<CellNetwork, NetworkError> {
        let subnet = config.subnet;
        let gw = subnet.gateway();
        // Forwarding is what lets containers out (and is what every
        // container host sets); route_localnet lets the host's own
        // 127.0.0.1:<host port> be DNATed out on the bridge.
        write_sysctl("net/ipv4/ip_forward", "1")?;
        ip_batch(
            None,
            &format!(
                "link add {br} type bridge\naddr add {gw}/{p} dev {br}\n",
                br = names.bridge,
                p = subnet.prefix()
            ),
        )
        .await?;
        let br = &names.bridge;
        // No IPv6 on the bridge: a link-local address would give
        // containers a path to host services listening on `::`.
        if Path::new("/proc/sys/net/ipv6").exists() {
            write_sysctl(&format!("net/ipv6/conf/{br}/disable_ipv6"), "1")?;
        }
        write_sysctl(&format!("net/ipv4/conf/{br}/route_localnet"), "1")?;
        ip_batch(None, &format!("link set {br} up\n")).await?;
        nft(&nft::table(&names, &subnet, address)).await?;

        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::write(
                    dir.join("resolv.conf"),
                    format!("nameserver {gw}\noptions ndots:1\n"),
                )
            })
            .map_err(|e| NetworkError::Setup(format!("writing resolv.conf: {e}")))?;
        let relay = tokio::net::UdpSocket::bind((gw, 53))
            .await
            .map_err(|e| NetworkError::Setup(format!("dns relay on {gw}:53: {e}")))?;
        let upstreams = if config.dns_servers.is_empty() {
            dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        } else {
            config.dns_servers.clone()
        };
        if upstreams.is_empty() {
            tracing::warn!(
                cell_id,
                "no nameservers for the dns relay: containers will not resolve names"
            );
        }
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(dns::serve(relay, upstreams, relay_stop.clone()));
        tracing::info!(cell_id, bridge = %names.bridge, %subnet, "cell network ready");
        Ok(CellNetwork {
            resolv_conf: dir.join("resolv.conf"),
            state: Mutex::new(State {
                pool: IpPool::new(&subnet),
                attached: HashMap::new(),
                held_ports: HashMap::new(),
                ready: Vec::new(),
                making: 0,
                closed: false,
            }),
            names,
            subnet,
            address,
            relay_stop,
            relay: Mutex::new(Some(relay)),
            next_ready: AtomicU64::new(0),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The `resolv.conf` containers get (`nameserver <gateway>`).
    pub fn resolv_conf(&self) -> &Path {
        &self.resolv_conf
    }

    /// Takes host port `port` for a container: binds it, without
    /// listening, at the cell's address (see `State::held_ports`).
    pub fn hold_port(&self, port: u16) -> Result<HeldPort, NetworkError> {
        let at = self.address.unwrap_or(Ipv4Addr::UNSPECIFIED);
        tokio::net::TcpSocket::new_v4()
            .and_then(|socket| {
                socket.bind(std::net::SocketAddr::from((at, port)))?;
                Ok(HeldPort { port, socket })
            })
            .map_err(|source| NetworkError::PortTaken { port, source })
    }

    /// Creates the container's namespace and veth, and maps `host_port`
    /// to its [`CONTAINER_PORT`].
    pub async fn attach(
        &self,
        id: &str,
        host_port: Option<HeldPort>,
    ) -> Result<Attachment, NetworkError> {
        self.attach_to_port(id, host_port, CONTAINER_PORT).await
    }

    /// [`CellNetwork::attach`] with the port the app listens on inside
    /// (a docker image's first exposed port).
    pub async fn attach_to_port(
        &self,
        id: &str,
        host_port: Option<HeldPort>,
        container_port: u16,
    ) -> Result<Attachment, NetworkError> {
        let (attachment, made_ahead) = self.reserve(id, host_port)?;
        let names = &self.names;
        let links = async {
            if made_ahead {
                return Ok(());
            }
            let ns = netns_name(&attachment);
            self.make_links(&ns, &attachment.veth, attachment.ip).await
        };
        let mapping = async {
            match attachment.host_port {
                Some(port) => nft(&nft::add_port(names, port, attachment.ip, container_port))
                    .await
                    .map(drop),
                None => Ok(()),
            }
        };
        let (links, mapping) = tokio::join!(links, mapping);
        if let Err(error) = links.and(mapping) {
            self.detach(id).await;
            return Err(error);
        }
        Ok(attachment)
    }

    /// The namespace `ns` with the veth `veth` on the bridge, addressed `ip`.
    async fn make_links(&self, ns: &str, veth: &str, ip: Ipv4Addr) -> Result<(), NetworkError> {
        let host_side = format!(
            "netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n\
             link set {veth} master {br}\nlink set dev {veth} type bridge_slave isolated on\n\
             link set {veth} up\n",
            br = self.names.bridge
        );
        let inside = format!(
            "addr add {ip}/{p} dev eth0\nlink set eth0 up\nlink set lo up\n\
             route add default via {gw}\n",
            p = self.subnet.prefix(),
            gw = self.subnet.gateway()
        );
        ip_batch(None, &host_side).await?;
        ip_batch(Some(ns), &inside).await.map(drop)
    }

    /// Makes a namespace ahead in the background, unless one is ready or
    /// being made (or the subnet is full).
    pub fn refill(self: &Arc<Self>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed || state.ready.len() + state.making >= READY_NAMESPACES {
            return;
        }
        let Some(index) = state.pool.allocate() else {
            return;
        };
        state.making += 1;
        drop(state);
        let n = self.next_ready.fetch_add(1, Ordering::Relaxed);
        let ready = Ready {
            netns: self.names.netns(&format!("ready{n}")),
            veth: self.names.veth(index),
            index,
        };
        let network = self.clone();
        tokio::spawn(async move {
            let ip = network.subnet.nth(index);
            let made = network.make_links(&ready.netns, &ready.veth, ip).await;
            let batch = format!("link del {}\nnetns del {}\n", ready.veth, ready.netns);
            {
                let mut state = network.state.lock().unwrap_or_else(|e| e.into_inner());
                state.making -= 1;
                if made.is_ok() && !state.closed {
                    state.ready.push(ready);
                    return;
                }
            }
            if let Err(error) = made {
                tracing::warn!(%error, "making a container network ahead");
            }
            // The address is free again only once its veth is gone.
            let _ = ip_batch_force(&batch).await;
            let mut state = network.state.lock().unwrap_or_else(|e| e.into_inner());
            state.pool.release(index);
        });
    }

    /// Reserves the container's address (a ready namespace's, then `true`)
    /// and keeps its host port's socket.
    fn reserve(
        &self,
        id: &str,
        host_port: Option<HeldPort>,
    ) -> Result<(Attachment, bool), NetworkError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.attached.contains_key(id) {
            return Err(NetworkError::Attached(id.into()));
        }
        let host_port = host_port.map(|held| {
            state.held_ports.insert(id.into(), held.socket);
            held.port
        });
        let (netns, index, made_ahead) = match state.ready.pop() {
            Some(ready) => (ready.netns, ready.index, true),
            None => {
                let Some(index) = state.pool.allocate() else {
                    state.held_ports.remove(id);
                    return Err(NetworkError::Exhausted(self.subnet));
                };
                (self.names.netns(id), index, false)
            }
        };
        let attachment = Attachment {
            netns: Path::new(NETNS_DIR).join(netns),
            ip: self.subnet.nth(index),
            host_port,
            veth: self.names.veth(index),
            index,
        };
        state.attached.insert(id.into(), attachment.clone());
        Ok((attachment, made_ahead))
    }

    pub fn attachment(&self, id: &str) -> Option<Attachment> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.attached.get(id).cloned()
    }

    /// Removes the container's port mapping, veth and namespace (after its
    /// processes are gone). Failures are logged: the next start of the
    /// cell removes whatever is left.
    pub async fn detach(&self, id: &str) {
        let Some(attachment) = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attached
            .remove(id)
        else {
            return;
        };
        if let Some(port) = attachment.host_port
            && let Err(error) = nft(&nft::delete_port(&self.names, port)).await
        {
            tracing::warn!(container = id, %error, "removing port mapping");
        }
        // Deleting the veth is synchronous; leaving it to the namespace's
        // teardown would let it linger for a while.
        let batch = format!(
            "link del {}\nnetns del {}\n",
            attachment.veth,
            netns_name(&attachment)
        );
        if let Err(error) = ip_batch_force(&batch).await {
            tracing::warn!(container = id, %error, "removing container network");
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pool.release(attachment.index);
        state.held_ports.remove(id);
    }

    /// Removes the bridge, the table, every namespace of the cell, and
    /// stops the relay (at shutdown, after the containers are gone).
    pub async fn teardown(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        // A namespace being made ahead would outlive the sweep below.
        for _ in 0..1000 {
            if self.state.lock().unwrap_or_else(|e| e.into_inner()).making == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.relay_stop.cancel();
        // Its socket must be closed before a restarted cell binds the
        // gateway address again.
        let relay = self.relay.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attached
            .clear();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held_ports
            .clear();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready
            .clear();
        remove_leftovers(&self.names).await;
    }
}

impl Drop for CellNetwork {
    fn drop(&mut self) {
        self.relay_stop.cancel();
    }
}

/// The name of the attachment's namespace (the container's, or the one
/// made ahead that it took).
fn netns_name(attachment: &Attachment) -> String {
    attachment
        .netns
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `ip` batch that removes a cell's veths, namespaces and bridge. The
/// veths are deleted by name: the kernel removes a namespace's interfaces
/// only some time after the namespace is gone.
fn leftovers_batch(names: &Names, links: &str) -> String {
    let mut batch = String::new();
    for line in links.lines() {
        // `12: kvabcdef0002@if3: <BROADCAST,...`
        if let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next())
            && name.starts_with(&names.veth_prefix)
        {
            batch.push_str(&format!("link del {name}\n"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&names.netns_prefix) {
                batch.push_str(&format!("netns del {name}\n"));
            }
        }
    }
    batch.push_str(&format!("link del {}\n", names.bridge));
    batch
}

/// Removes a cell's network without a runtime, for a process about to exit
/// (a test's last resort after a failure). Errors are ignored: most of it
/// is usually absent.
pub fn remove_leftovers_blocking(cell_id: &str) {
    use std::io::Write;
    let names = Names::for_cell(cell_id);
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for (program, args, input) in [
        (
            "ip",
            ["-force", "-batch", "-"],
            leftovers_batch(&names, &links),
        ),
        ("nft", ["-f", "-", ""], nft::delete_table(&names)),
    ] {
        let child = std::process::Command::new(program)
            .args(args.iter().filter(|a| !a.is_empty()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(input.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

/// Everything of a cell's network by name, whether or not it exists.
async fn remove_leftovers(names: &Names) {
    let links = run("ip", &["-o", "link", "show"], None)
        .await
        .unwrap_or_default();
    let batch = leftovers_batch(names, &links);
    if let Err(error) = ip_batch_force(&batch).await {
        tracing::debug!(%error, "removing leftover interfaces (most were absent)");
    }
    if let Err(error) = nft(&nft::delete_table(names)).await {
        tracing::warn!(%error, "removing leftover nft table");
    }
}

/// A subnet that overlaps an address already on the host would take
/// traffic from (or give it to) something else.
async fn refuse_overlap(names: &Names, subnet: &Subnet) -> Result<(), NetworkError> {
    let out = run("ip", &["-4", "-o", "addr", "show"], None).await?;
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let dev = words.nth(1).unwrap_or("");
        let Some(cidr) = words.skip_while(|w| *w != "inet").nth(1) else {
            continue;
        };
        let Some((addr, prefix)) = cidr.split_once('/') else {
            continue;
        };
        let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
            continue;
        };
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        let network = Ipv4Addr::from(u32::from(addr) & mask);
        let theirs = format!("{network}/{prefix}").parse::<Subnet>();
        let overlaps = match theirs {
            Ok(theirs) => theirs.overlaps(subnet),
            // Too wide or too narrow for a cell network: compare the one
            // address (a /8 covering ours is missed, as is rare).
            Err(_) => subnet.contains(addr),
        };
        if overlaps && dev != names.bridge {
            return Err(NetworkError::Setup(format!(
                "cell network {subnet} overlaps {cidr} on {dev}; choose another subnet"
            )));
        }
    }
    Ok(())
}

fn write_sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value)
        .map_err(|e| NetworkError::Setup(format!("setting {}: {e}", path.display())))
}

async fn ip_batch(netns: Option<&str>, batch: &str) -> Result<String, NetworkError> {
    match netns {
        Some(ns) => run("ip", &["-n", ns, "-batch", "-"], Some(batch)).await,
        None => run("ip", &["-batch", "-"], Some(batch)).await,
    }
}

/// Every command of the batch, even after one fails (removals of what may
/// be absent).
async fn ip_batch_force(batch: &str) -> Result<String, NetworkError> {
    run("ip", &["-force", "-batch", "-"], Some(batch)).await
}

async fn nft(script: &str) -> Result<String, NetworkError> {
    run("nft", &["-f", "-"], Some(script)).await
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let spawn_err = |source| NetworkError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetworkError::Failed {
            command: format!("{command}\n{}", stdin.unwrap_or(""))
                .trim()
                .to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_found_by_name() {
        let names = Names::for_cell("cell-0");
        let veth = names.veth(2);
        let links = format!(
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536\n\
             9: {veth}@if3: <BROADCAST,MULTICAST,UP> mtu 1500 master {br}\n\
             10: kv000000ffff@if2: <BROADCAST> mtu 1500\n",
            br = names.bridge
        );
        let batch = leftovers_batch(&names, &links);
        assert!(batch.starts_with(&format!("link del {veth}\n")), "{batch}");
        assert!(!batch.contains("kv000000ffff"), "{batch}");
        assert!(
            batch.ends_with(&format!("link del {}\n", names.bridge)),
            "{batch}"
        );
    }

    #[test]
    fn names_fit_the_kernel_and_differ_per_cell() {
        let a = Names::for_cell("cell-0");
        let b = Names::for_cell("cell-1");
        assert_ne!(a.bridge, b.bridge);
        assert!(a.bridge.len() <= 15);
        assert!(a.veth(0xffff).len() <= 15);
        assert_eq!(a.veth(2).len(), 12);
        assert!(a.netns("x").starts_with("kiln-"));
        assert!(a.table.starts_with("kiln_"));
    }
}
