//! Choosing free resources: a subnet from the default address pool (or the one the user asked for), a VNI,
//! an address on a subnet. Pure functions over what is taken; the store's apply holds the same rules as
//! invariants, so a wrong pick is refused, never committed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::Cidr;

/// The first VXLAN network identifier handed out (Swarm's overlay driver starts at 4096 too).
pub const VNI_BASE: u32 = 4096;

/// The largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// The first subnet of `mask_len` in `pools` (in order) that overlaps none of `taken`.
pub fn subnet_from_pool(pools: &[Cidr], mask_len: u8, taken: &[Cidr]) -> Option<Cidr> {
    for pool in pools {
        // skip whole runs of candidates covered by a taken subnet instead of testing each one
        let mut candidates = pool.subnets(mask_len).peekable();
        while let Some(c) = candidates.next() {
            match taken.iter().find(|t| t.overlaps(&c)) {
                None => return Some(c),
                Some(t) if t.prefix() < mask_len => {
                    // a larger taken subnet: jump past its end
                    let end = u64::from(u32::from(t.network())) + t.size();
                    while candidates
                        .peek()
                        .is_some_and(|n| u64::from(u32::from(n.network())) < end)
                    {
                        candidates.next();
                    }
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// The lowest VNI from [`VNI_BASE`] not in `taken`.
pub fn vni(taken: &BTreeSet<u32>) -> Option<u32> {
    (VNI_BASE..=VNI_MAX).find(|v| !taken.contains(v))
}

/// The first free host address of `subnet` at or after offset `cursor`, wrapping around (the network, the
/// gateway and the broadcast address are never handed out). Returns the address and its offset.
pub fn address(subnet: &Cidr, cursor: u64, used: &BTreeSet<Ipv4Addr>) -> Option<(Ipv4Addr, u64)> {
    let hosts = subnet.host_offsets();
    let (first, last) = (*hosts.start(), *hosts.end());
    if first > last {
        return None;
    }
    let start = cursor.clamp(first, last);
    (start..=last)
        .chain(first..start)
        .filter_map(|o| subnet.nth(o).map(|a| (a, o)))
        .find(|(a, _)| !used.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("test subnet")
    }

    #[test]
    fn subnets_come_from_the_pools_in_order_around_what_is_taken() {
        let pools = [cidr("10.0.0.0/8"), cidr("192.168.0.0/16")];
        let cases: Vec<(&str, Vec<Cidr>, u8, Option<&str>)> = vec![
            ("empty", vec![], 24, Some("10.0.0.0/24")),
            (
                "first taken",
                vec![cidr("10.0.0.0/24")],
                24,
                Some("10.0.1.0/24"),
            ),
            (
                "a user's /16 skipped at once",
                vec![cidr("10.0.0.0/16")],
                24,
                Some("10.1.0.0/24"),
            ),
            (
                "a small taken subnet blocks its /24",
                vec![cidr("10.0.0.128/25")],
                24,
                Some("10.0.1.0/24"),
            ),
            (
                "the first pool full",
                vec![cidr("10.0.0.0/8")],
                24,
                Some("192.168.0.0/24"),
            ),
            (
                "everything full",
                vec![cidr("10.0.0.0/8"), cidr("192.168.0.0/16")],
                24,
                None,
            ),
            ("another size", vec![], 26, Some("10.0.0.0/26")),
        ];
        for (what, taken, mask, want) in cases {
            let got = subnet_from_pool(&pools, mask, &taken).map(|c| c.to_string());
            assert_eq!(got.as_deref(), want, "{what}");
        }
    }

    #[test]
    fn vnis_are_the_lowest_free_from_4096() {
        assert_eq!(vni(&BTreeSet::new()), Some(4096));
        assert_eq!(vni(&[4096, 4097, 4099].into()), Some(4098));
    }

    #[test]
    fn addresses_follow_the_cursor_and_wrap() {
        let net = cidr("10.0.1.0/29"); // hosts .2 ..= .6
        let used = |v: &[u8]| -> BTreeSet<Ipv4Addr> {
            v.iter().map(|o| Ipv4Addr::new(10, 0, 1, *o)).collect()
        };
        let cases: Vec<(u64, Vec<u8>, Option<u8>)> = vec![
            (0, vec![], Some(2)),
            (2, vec![2], Some(3)),
            // a freed .2 is behind the cursor: .4 comes first
            (4, vec![3], Some(4)),
            (6, vec![6], Some(2)),
            (5, vec![2, 3, 4, 5, 6], None),
            (99, vec![], Some(6)),
        ];
        for (cursor, taken, want) in cases {
            let got = address(&net, cursor, &used(&taken)).map(|(a, _)| a.octets()[3]);
            assert_eq!(got, want, "cursor {cursor}, taken {taken:?}");
        }
        assert_eq!(address(&cidr("10.0.1.0/31"), 0, &BTreeSet::new()), None);
    }
}
