//! Outbound NAT like `docker_gwbridge`: one nftables table of ours (`ip swarm_nat`), a masquerade rule per
//! non-internal subnet for traffic leaving through anything but that network's bridge, and forward rules that
//! let the bridges' traffic out and the replies back in. The ruleset is generated (pure) and applied with
//! `nft -f -` in one transaction that replaces the whole table, so a node never holds half a ruleset.
//!
//! Why the `nft` binary and not a netlink crate: the nftables netlink crates (rustables, nftnl bindings) are
//! thinly maintained or need libnftnl's C library; `nft -f` is the kernel project's own front end, atomic per
//! file, and one short-lived process per changed map is no cost.
//!
//! An accept in our own table cannot undo a drop in another one (every base chain of a hook must accept), and
//! Docker sets the iptables `FORWARD` policy to DROP with `br_netfilter` on, which drops even the traffic
//! between two tasks on one of our bridges: [`open_forwarding`] adds accept rules for our bridges to
//! `DOCKER-USER` (Docker's documented chain for exactly this) or, without Docker, to the top of a `FORWARD` chain
//! whose policy is DROP, idempotently.
//!
//! Must not: touch any table but `swarm_nat`, except those accept rules.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::desired::NetPlan;
use super::NetError;

/// Our table's name (family `ip`).
pub const TABLE: &str = "swarm_nat";

/// Where the nft binary is looked for, in order.
const NFT: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// The script that replaces our table with the rules for `networks` (deletes it when none needs NAT).
pub fn ruleset(networks: &[NetPlan]) -> String {
    let outbound: Vec<&NetPlan> = networks.iter().filter(|n| !n.internal).collect();
    // creating before deleting makes the delete valid whether or not the table existed
    let mut s = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n");
    if outbound.is_empty() {
        return s;
    }
    s.push_str(&format!("table ip {TABLE} {{\n"));
    s.push_str(
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in &outbound {
        s.push_str(&format!(
            "\t\tip saddr {}/{} oifname != \"{}\" masquerade\n",
            n.subnet, n.prefix, n.bridge
        ));
    }
    s.push_str("\t}\n");
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    for n in &outbound {
        s.push_str(&format!(
            "\t\tiifname \"{br}\" accept\n\t\toifname \"{br}\" ct state established,related accept\n",
            br = n.bridge
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

fn nft() -> Option<&'static str> {
    NFT.into_iter().find(|p| Path::new(p).exists())
}

/// Applies `script` with `nft -f -` (in this process's network namespace).
pub fn apply(script: &str) -> Result<(), NetError> {
    let Some(nft) = nft() else {
        return Err(NetError::Kernel(
            "outbound NAT needs nftables' nft (install the nftables package): not found in /usr/sbin, /sbin, /usr/bin"
                .into(),
        ));
    };
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Kernel(format!("running {nft}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Kernel(format!("writing the ruleset to {nft}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Kernel(format!("waiting for {nft}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Kernel(format!(
        "{nft} -f - refused the NAT ruleset ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Where the iptables binary is looked for.
const IPTABLES: [&str; 3] = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"];

/// Lets our bridges' traffic through an iptables filter `FORWARD` chain that would drop it (see the module
/// docs). Nothing happens without iptables, or when FORWARD accepts by default and Docker's chain is absent.
pub fn open_forwarding() -> Result<(), NetError> {
    let Some(iptables) = IPTABLES.into_iter().find(|p| Path::new(p).exists()) else {
        return Ok(());
    };
    let run = |args: &[&str]| {
        Command::new(iptables)
            .args(["-w", "5"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let chain = if run(&["-t", "filter", "-S", "DOCKER-USER"]) {
        "DOCKER-USER"
    } else {
        let policy = Command::new(iptables)
            .args(["-w", "5", "-t", "filter", "-S", "FORWARD", "1"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !policy.contains("-P FORWARD DROP") {
            return Ok(());
        }
        "FORWARD"
    };
    let bridges = format!("{}+", super::names::BRIDGE_PREFIX);
    for dir in ["-i", "-o"] {
        let rule = [chain, dir, bridges.as_str(), "-j", "ACCEPT"];
        let mut check = vec!["-t", "filter", "-C"];
        check.extend(rule);
        if run(&check) {
            continue;
        }
        let mut insert = vec!["-t", "filter", "-I"];
        insert.extend(rule);
        if !run(&insert) {
            return Err(NetError::Kernel(format!(
                "{iptables}: cannot add `{}` so that traffic of the task networks is forwarded",
                rule.join(" ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::names;

    fn net(id: &str, subnet: &str, internal: bool) -> NetPlan {
        NetPlan {
            id: id.into(),
            name: id.into(),
            bridge: names::bridge_name(id),
            subnet: subnet.parse().unwrap(),
            prefix: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            internal,
            vxlan: None,
        }
    }

    #[test]
    fn non_internal_subnets_are_masqueraded_unless_they_stay_on_their_bridge() {
        let nets = [net("a", "10.0.1.0", false), net("b", "10.0.2.0", true)];
        let s = ruleset(&nets);
        let br = names::bridge_name("a");
        assert!(s.starts_with(
            "table ip swarm_nat {}\ndelete table ip swarm_nat\ntable ip swarm_nat {\n"
        ));
        assert!(
            s.contains(&format!(
                "ip saddr 10.0.1.0/24 oifname != \"{br}\" masquerade"
            )),
            "{s}"
        );
        assert!(s.contains(&format!("iifname \"{br}\" accept")), "{s}");
        assert!(
            !s.contains("10.0.2.0"),
            "an internal network gets no NAT: {s}"
        );
    }

    #[test]
    fn no_outbound_network_removes_the_table() {
        assert_eq!(
            ruleset(&[net("b", "10.0.2.0", true)]),
            "table ip swarm_nat {}\ndelete table ip swarm_nat\n"
        );
    }
}
