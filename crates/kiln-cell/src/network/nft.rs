//! The cell's nftables table: one `inet` table per cell with fixed chains
//! and one map, so that a container adds or removes one map element
//! (`host port : container ip . 8080`) and the chains never change while
//! the cell runs. Deleting the table removes every rule of the cell.

use super::Names;
use super::subnet::Subnet;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Replaces the cell's table atomically: `add` makes the `delete` succeed
/// when there was none, and the whole script is one nft transaction.
pub fn table(names: &Names, subnet: &Subnet, address: Option<Ipv4Addr>) -> String {
    let (t, br, gw) = (&names.table, &names.bridge, subnet.gateway());
    // The advertised address only, when the cell has one: with the default
    // 127.0.0.1, instances are not reachable on the machine's other
    // addresses, only through the router.
    let to_cell = match address {
        Some(ip) => format!("ip daddr {ip}"),
        None => "fib daddr type local".to_string(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "add table inet {t}
delete table inet {t}
table inet {t} {{
  map ports {{ type inet_service : ipv4_addr . inet_service; }}

  # A host port on the cell's address leads to its container: traffic from
  # elsewhere (prerouting) and from the host itself (output, where the
  # router runs).
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {to_cell} meta l4proto tcp dnat ip to tcp dport map @ports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    {to_cell} meta l4proto tcp dnat ip to tcp dport map @ports
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    # The host dialling 127.0.0.1:<host port>: a loopback source cannot
    # leave on the bridge, so it becomes the gateway's.
    oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade
    # Containers reach the outside through NAT.
    ip saddr {subnet} oifname != \"{br}\" masquerade
  }}

  # Containers reach nothing on the host but the DNS relay: not its
  # loopback services, not the API, not the BBS. Replies to connections the
  # host opened (health checks, the router) are let back in.
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{br}\" ct state established,related accept
    iifname \"{br}\" ip daddr {gw} udp dport 53 accept
    iifname \"{br}\" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    # No container-to-container traffic routed through the gateway (the
    # bridge ports are isolated for the switched path).
    iifname \"{br}\" oifname \"{br}\" drop
    # From elsewhere, only mapped ports and replies reach a container.
    oifname \"{br}\" ct status dnat accept
    oifname \"{br}\" ct state established,related accept
    oifname \"{br}\" drop
  }}
}}
"
    );
    s
}

/// Deletes the table if it exists.
pub fn delete_table(names: &Names) -> String {
    let t = &names.table;
    format!("add table inet {t}\ndelete table inet {t}\n")
}

pub fn add_port(names: &Names, host_port: u16, ip: Ipv4Addr, container_port: u16) -> String {
    format!(
        "add element inet {} ports {{ {host_port} : {ip} . {container_port} }}\n",
        names.table
    )
}

pub fn delete_port(names: &Names, host_port: u16) -> String {
    format!(
        "delete element inet {} ports {{ {host_port} }}\n",
        names.table
    )
}
