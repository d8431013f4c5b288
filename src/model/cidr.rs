//! IPv4 subnets and addresses as the store keeps them (`10.0.1.0/24`, a task's `10.0.1.5/24`): parsing with
//! errors that say what is wrong, and the arithmetic IPAM needs (containment, overlap, the n-th host). Plain
//! `u32` arithmetic over `std::net::Ipv4Addr`; IPv6 is not allocated (Swarm's default pools are IPv4 too).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet: the network address (host bits zero) and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

/// The mask of a prefix length (0..=32).
fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// Splits `ADDR/PREFIX` into its parts, with an error naming what is wrong.
pub fn parse_addr_prefix(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not in CIDR form (e.g. 10.0.1.0/24)"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{text:?}: prefix length {prefix:?} is not between 0 and 32"))?;
    Ok((addr, prefix))
}

impl Cidr {
    /// The subnet of `addr` with `prefix` (host bits dropped).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = prefix.min(32);
        Cidr {
            base: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    /// Parses `10.0.1.0/24`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = parse_addr_prefix(text)?;
        let cidr = Cidr::new(addr, prefix);
        if cidr.network() != addr {
            return Err(format!("{text:?} has host bits set (the subnet is {cidr})"));
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the subnet spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The address `offset` after the network address (None past the end).
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(offset as u32)))
    }

    /// How far `addr` is from the network address (None outside the subnet).
    pub fn offset_of(&self, addr: Ipv4Addr) -> Option<u64> {
        self.contains(addr)
            .then(|| u64::from(u32::from(addr).wrapping_sub(self.base)))
    }

    /// Whether `addr` is in the subnet.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == self.base
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        self.base & mask(shorter) == other.base & mask(shorter)
    }

    /// The gateway Swarm gives a network: its first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1).unwrap_or(self.network())
    }

    /// The addresses tasks and VIPs may get: every one but the network, the gateway and the broadcast
    /// address, as offsets `first..=last` (empty for a /31 or /32).
    pub fn host_offsets(&self) -> std::ops::RangeInclusive<u64> {
        2..=self.size().saturating_sub(2)
    }

    /// `addr/prefix`, the form task addresses and VIPs are stored in.
    pub fn with_host(&self, addr: Ipv4Addr) -> String {
        format!("{addr}/{}", self.prefix)
    }

    /// The subnets of `prefix` inside this one, in order (none when `prefix` is shorter than this one's).
    pub fn subnets(&self, prefix: u8) -> impl Iterator<Item = Cidr> + '_ {
        let count = if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix)
        };
        let step = 1u64 << (32 - u32::from(prefix.min(32)));
        (0..count).map(move |i| Cidr {
            base: self.base.wrapping_add((i * step) as u32),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cidr::parse(s)
    }
}

/// The address part of a stored `10.0.1.5/24` (None when it does not parse).
pub fn host_of(stored: &str) -> Option<Ipv4Addr> {
    parse_addr_prefix(stored).ok().map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_reasons() {
        let c = Cidr::parse("10.0.1.0/24").unwrap();
        assert_eq!(c.to_string(), "10.0.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.host_offsets(), 2..=254);
        assert!(Cidr::parse("10.0.1.5/24")
            .unwrap_err()
            .contains("host bits set (the subnet is 10.0.1.0/24)"));
        assert!(Cidr::parse("10.0.1.0").unwrap_err().contains("CIDR form"));
        assert!(Cidr::parse("10.0.1.0/33")
            .unwrap_err()
            .contains("prefix length"));
        assert!(Cidr::parse("10.0.x.0/24")
            .unwrap_err()
            .contains("not an IPv4"));
    }

    #[test]
    fn overlap_containment_and_subnets() {
        let pool = Cidr::parse("10.0.0.0/8").unwrap();
        let a = Cidr::parse("10.0.1.0/24").unwrap();
        let b = Cidr::parse("10.0.0.0/16").unwrap();
        let c = Cidr::parse("10.1.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(pool.overlaps(&c));
        let mut subs = pool.subnets(24);
        assert_eq!(subs.next().unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(subs.next().unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(pool.subnets(24).count(), 65536);
        assert_eq!(a.subnets(16).count(), 0);
        assert_eq!(a.offset_of(Ipv4Addr::new(10, 0, 1, 9)), Some(9));
        assert_eq!(a.offset_of(Ipv4Addr::new(10, 0, 2, 9)), None);
        assert_eq!(a.with_host(a.nth(5).unwrap()), "10.0.1.5/24");
        assert_eq!(host_of("10.0.1.5/24"), Some(Ipv4Addr::new(10, 0, 1, 5)));
    }
}
