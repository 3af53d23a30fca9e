//! The cell's container subnet (`10.254.0.0/22`): the gateway on the
//! bridge takes the first address, containers the rest but the broadcast
//! address, handed out in rotation so that an address is not reused at
//! once (a late packet for a destroyed container must not reach the next).

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Large enough for a cell's containers, small enough that the index of an
/// address fits the 4 hex digits of a veth name.
const PREFIX_RANGE: std::ops::RangeInclusive<u8> = 16..=29;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cell network {input:?}: {why}")]
pub struct SubnetError {
    input: String,
    why: String,
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(input: &str) -> Result<Subnet, SubnetError> {
        let err = |why: &str| SubnetError {
            input: input.into(),
            why: why.into(),
        };
        let (addr, prefix) = input
            .split_once('/')
            .ok_or_else(|| err("expected an IPv4 CIDR such as 10.254.0.0/22"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        if !PREFIX_RANGE.contains(&prefix) {
            return Err(err(&format!(
                "prefix length must be {} to {}",
                PREFIX_RANGE.start(),
                PREFIX_RANGE.end()
            )));
        }
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            return Err(err("host bits are set (give the network address)"));
        }
        if network.is_loopback() || network.is_multicast() || network.is_unspecified() {
            return Err(err("not a unicast network"));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The address at `index` from the network address.
    pub fn nth(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + index)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Container address indices: after the gateway, before the broadcast.
    pub fn host_indices(&self) -> std::ops::Range<u32> {
        2..(1u32 << (32 - self.prefix)) - 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

/// Container addresses in use.
pub struct IpPool {
    range: std::ops::Range<u32>,
    in_use: HashSet<u32>,
    next: u32,
}

impl IpPool {
    pub fn new(subnet: &Subnet) -> IpPool {
        let range = subnet.host_indices();
        IpPool {
            next: range.start,
            range,
            in_use: HashSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Option<u32> {
        let len = self.range.len() as u32;
        for i in 0..len {
            let index = self.range.start + (self.next - self.range.start + i) % len;
            if self.in_use.insert(index) {
                self.next = self.range.start + (index + 1 - self.range.start) % len;
                return Some(index);
            }
        }
        None
    }

    pub fn release(&mut self, index: u32) {
        self.in_use.remove(&index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_refuses_what_cannot_be_a_cell_network() {
        let s: Subnet = "10.254.0.0/22".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 254, 0, 1));
        assert_eq!(s.host_indices(), 2..1023);
        assert_eq!(s.nth(1022), Ipv4Addr::new(10, 254, 3, 254));
        assert!(s.contains(Ipv4Addr::new(10, 254, 3, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 254, 4, 1)));
        assert_eq!(s.to_string(), "10.254.0.0/22");
        for bad in [
            "10.254.0.0",
            "10.254.0.1/22",
            "10.254.0.0/8",
            "10.254.0.0/31",
            "127.0.0.0/24",
            "fd00::/64",
            "10.254.0.0/x",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad} accepted");
        }
        let inner: Subnet = "10.254.2.0/24".parse().unwrap();
        assert!(s.overlaps(&inner) && inner.overlaps(&s));
        assert!(!s.overlaps(&"10.255.0.0/24".parse().unwrap()));
    }

    #[test]
    fn pool_rotates_and_runs_out() {
        let s: Subnet = "10.1.0.0/29".parse().unwrap();
        let mut pool = IpPool::new(&s);
        let got: Vec<u32> = std::iter::from_fn(|| pool.allocate()).collect();
        assert_eq!(got, [2, 3, 4, 5, 6]);
        pool.release(3);
        assert_eq!(pool.allocate(), Some(3));
        pool.release(2);
        pool.release(5);
        // Rotation: after 3, the next free one is 5, not 2.
        assert_eq!(pool.allocate(), Some(5));
        assert_eq!(pool.allocate(), Some(2));
        assert_eq!(pool.allocate(), None);
    }
}
