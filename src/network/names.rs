//! Names and addresses derived from the map, the same on every node and after every restart: a link's name from
//! its network (and task) id, a MAC from an IPv4 address (Docker's `02:42:<ip>`). Every link this module creates
//! carries one of these shapes, so cleanup recognizes its own links and never touches a foreign one.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// A network's bridge: `swbr-` + 8 hex digits.
pub const BRIDGE_PREFIX: &str = "swbr-";
/// A network's VXLAN device: `swvx-` + 8 hex digits.
pub const VXLAN_PREFIX: &str = "swvx-";
/// The node's end of a task's veth pair: `swv` + 12 hex digits.
pub const VETH_PREFIX: &str = "swv";

/// The VXLAN UDP port (IANA's, Docker's default).
pub const VXLAN_PORT: u16 = 4789;

fn digest_hex(parts: &[&str], chars: usize) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let mut out = hex::encode(h.finalize());
    out.truncate(chars);
    out
}

/// The bridge of network `network_id` (13 characters: within the kernel's 15).
pub fn bridge_name(network_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", digest_hex(&[network_id], 8))
}

/// The VXLAN device of network `network_id`.
pub fn vxlan_name(network_id: &str) -> String {
    format!("{VXLAN_PREFIX}{}", digest_hex(&[network_id], 8))
}

/// The node's end of the veth pair of task `task_id` on network `network_id` (15 characters).
pub fn veth_name(task_id: &str, network_id: &str) -> String {
    format!("{VETH_PREFIX}{}", digest_hex(&[task_id, network_id], 12))
}

/// What kind of our links `name` is, or `None` for a link this module never made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ours {
    /// A network's bridge.
    Bridge,
    /// A network's VXLAN device.
    Vxlan,
    /// A task's veth (the node's end).
    Veth,
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Recognizes the names this module gives (and nothing else: `swbr-x`, `swvfoo` are not ours).
pub fn ours(name: &str) -> Option<Ours> {
    if let Some(rest) = name.strip_prefix(BRIDGE_PREFIX) {
        return is_hex(rest, 8).then_some(Ours::Bridge);
    }
    if let Some(rest) = name.strip_prefix(VXLAN_PREFIX) {
        return is_hex(rest, 8).then_some(Ours::Vxlan);
    }
    let rest = name.strip_prefix(VETH_PREFIX)?;
    is_hex(rest, 12).then_some(Ours::Veth)
}

/// The MAC of the interface holding `ip`: `02:42:` and the address's four bytes (locally administered, unicast),
/// so every node knows a remote task's MAC from its address alone.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The task's interface on its `index`-th network (in the map's network order): `eth0`, `eth1`…
pub fn task_ifname(index: usize) -> String {
    format!("eth{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_short_and_recognized() {
        let br = bridge_name("n1abc");
        assert_eq!(br, bridge_name("n1abc"));
        assert_ne!(br, bridge_name("n1abd"));
        assert_eq!(br.len(), 13);
        assert_eq!(ours(&br), Some(Ours::Bridge));
        let vx = vxlan_name("n1abc");
        assert_eq!(vx.len(), 13);
        assert_eq!(ours(&vx), Some(Ours::Vxlan));
        let veth = veth_name("task1", "n1abc");
        assert_eq!(veth.len(), 15);
        assert_eq!(ours(&veth), Some(Ours::Veth));
        assert_ne!(veth, veth_name("task2", "n1abc"));
        // the separator keeps ("ab", "c") and ("a", "bc") apart
        assert_ne!(veth_name("ab", "c"), veth_name("a", "bc"));
    }

    #[test]
    fn foreign_links_are_not_ours() {
        for name in [
            "eth0",
            "docker0",
            "swbr-",
            "swbr-1234567",
            "swbr-123456789",
            "swbr-ABCDEF12",
            "swvx-zzzzzzzz",
            "swvfoo",
            "swv12345678901",
            "veth1234",
            "lo",
        ] {
            assert_eq!(ours(name), None, "{name}");
        }
    }

    #[test]
    fn macs_follow_docker() {
        let mac = mac_of("10.0.1.5".parse().unwrap());
        assert_eq!(mac_text(&mac), "02:42:0a:00:01:05");
        assert_eq!(task_ifname(1), "eth1");
    }
}
