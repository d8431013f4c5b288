//! Outbound NAT like `docker_gwbridge`: one nftables table of ours (`ip swarm_nat`), a masquerade rule per
//! non-internal subnet for traffic leaving through anything but that network's bridge, and forward rules that
//! let the bridges' traffic out and the replies back in. The ruleset is generated (pure) and applied with
//! `nft -f -` in one transaction that replaces the whole table, so a node never holds half a ruleset.
//!
//! Why the `nft` binary and not a netlink crate: the nftables netlink crates (rustables, nftnl bindings) are
//! thinly maintained or need libnftnl's C library; `nft -f` is the kernel project's own front end, atomic per
//! file, and one short-lived process per changed map is no cost.
//!
//! On a host where Docker runs, its `FORWARD` policy is drop and `br_netfilter` sends bridged frames through
//! it, so even two tasks on one of our bridges could not talk; Docker's documented place for exceptions is its
//! `DOCKER-USER` chain, where [`docker_user`] keeps two rules of ours (marked with a comment) that accept our
//! bridges' traffic while any network exists.
//!
//! Must not: touch any table but `swarm_nat`, except our two marked rules in Docker's `DOCKER-USER` chain.

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

/// The comment marking our rules in Docker's chain.
const MARK: &str = "swarm-netplane";

fn run_nft(args: &[&str]) -> Option<String> {
    let out = Command::new(nft()?)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// With `want`, makes sure Docker's `ip filter DOCKER-USER` chain (when there is one) accepts traffic from and
/// to our bridges; without, removes those rules. Returns what it changed, for the log.
pub fn docker_user(want: bool) -> Result<Option<&'static str>, NetError> {
    let Some(listing) = run_nft(&["-a", "list", "chain", "ip", "filter", "DOCKER-USER"]) else {
        return Ok(None); // no Docker (or no nftables view of it) here
    };
    let handles: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(&format!("comment \"{MARK}\"")))
        .filter_map(|l| l.rsplit_once("# handle ").map(|(_, h)| h.trim()))
        .collect();
    let fail =
        |what: &str| NetError::Kernel(format!("{what} in Docker's DOCKER-USER chain failed"));
    match (want, handles.is_empty()) {
        (true, true) => {
            for dir in ["oifname", "iifname"] {
                let rule = format!(
                    "insert rule ip filter DOCKER-USER {dir} \"swbr-*\" accept comment \"{MARK}\""
                );
                apply(&rule).map_err(|_| fail("accepting our bridges' traffic"))?;
            }
            Ok(Some(
                "accepting the bridges' traffic in Docker's DOCKER-USER chain",
            ))
        }
        (false, false) => {
            for h in handles {
                run_nft(&["delete", "rule", "ip", "filter", "DOCKER-USER", "handle", h])
                    .ok_or_else(|| fail("removing our rules"))?;
            }
            Ok(Some("removed our rules from Docker's DOCKER-USER chain"))
        }
        _ => Ok(None),
    }
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
