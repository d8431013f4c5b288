//! A network partition between managers, with network namespaces the test creates (three managers, each in its
//! own namespace, joined by veth pairs to a bridge in a fourth; only addresses inside those namespaces carry
//! traffic): the leader cut off, the majority elects a new leader, the old one stops leading and refuses
//! writes with the quorum error, and once healed there is one leader and one history without the refused write.
//! Needs root and `ip`; skipped (with a line saying so) otherwise.

use std::process::Command;

use super::cluster::{wait_for, Swarmd};

/// The namespaces and links of one test, removed on drop.
struct Net {
    prefix: String,
    subnet: u8,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-m{i}", self.prefix)
    }

    /// The hub side of manager `i`'s link (interface names stay under 16 bytes).
    fn hub_link(&self, i: usize) -> String {
        format!("{}m{i}b", self.prefix)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.231.{}.{i}", self.subnet)
    }

    /// Three namespaces on one bridge, or `None` when this machine cannot make them.
    fn create() -> Option<Net> {
        if !nix::unistd::geteuid().is_root() || !ip(&["netns", "list"]) {
            return None;
        }
        let pid = std::process::id();
        let net = Net {
            prefix: format!("sw{}", pid % 100_000),
            subnet: (pid % 200) as u8 + 20,
        };
        let hub = net.hub();
        let ok = ip(&["netns", "add", &hub])
            && ip(&["-n", &hub, "link", "set", "lo", "up"])
            && ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])
            && ip(&["-n", &hub, "link", "set", "br0", "up"]);
        if !ok {
            return None;
        }
        for i in 1..=3 {
            let (ns, a, b) = (net.ns(i), format!("{}m{i}a", net.prefix), net.hub_link(i));
            let cidr = format!("{}/24", net.addr(i));
            let ok = ip(&["netns", "add", &ns])
                && ip(&["-n", &ns, "link", "set", "lo", "up"])
                && ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
                && ip(&["link", "set", &a, "netns", &ns])
                && ip(&["link", "set", &b, "netns", &hub])
                && ip(&["-n", &ns, "addr", "add", &cidr, "dev", &a])
                && ip(&["-n", &ns, "link", "set", &a, "up"])
                && ip(&["-n", &hub, "link", "set", &b, "master", "br0"])
                && ip(&["-n", &hub, "link", "set", &b, "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    fn cut(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.hub_link(i),
            "down"
        ]));
    }

    fn heal(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.hub_link(i),
            "up"
        ]));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // deleting a namespace deletes the links in it
        for i in 1..=3 {
            ip(&["netns", "del", &self.ns(i)]);
        }
        ip(&["netns", "del", &self.hub()]);
    }
}

/// The leader's node id as `m`'s own Raft sees it (`swarm info`, answered locally), if it knows one.
fn leader_seen_by(m: &Swarmd) -> Option<String> {
    let out = m.ctl(&["swarm", "info", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let leader = v["Leader"].as_u64()?;
    v["RaftMembers"]
        .as_array()?
        .iter()
        .find(|x| x["RaftID"].as_u64() == Some(leader))
        .and_then(|x| x["NodeID"].as_str().map(str::to_string))
}

fn applied(m: &Swarmd) -> Option<u64> {
    let out = m.ctl(&["swarm", "info", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["RaftLastApplied"].as_u64()
}

#[test]
fn a_partitioned_leader_steps_down_the_majority_elects_a_new_one_and_healing_leaves_one_history() {
    let Some(net) = Net::create() else {
        eprintln!("skipped: network namespaces need root and `ip`");
        return;
    };
    let m1 = Swarmd::start_founder_in(net.ns(1), net.addr(1), 4242);
    let m2 = Swarmd::start_manager_in(&m1, "m2", Some((net.ns(2), net.addr(2))));
    let m3 = Swarmd::start_manager_in(&m1, "m3", Some((net.ns(3), net.addr(3))));
    let managers = [&m1, &m2, &m3];
    let ids: Vec<String> = managers.iter().map(|m| m.node_id()).collect();
    wait_for(60, "three managers, one leader", || {
        let ls = m1.ctl_ok(&["node", "ls"]);
        (ls.matches("Leader").count() == 1 && ls.matches("Reachable").count() == 2).then_some(())
    });
    let old = wait_for(30, "a leader", || {
        let l = leader_seen_by(&m1)?;
        ids.iter().position(|i| *i == l)
    });
    net.cut(old + 1);
    let (a, b) = ((old + 1) % 3, (old + 2) % 3);
    // the majority elects a new leader
    let new = wait_for(30, "a new leader in the majority", || {
        let l = leader_seen_by(managers[a])?;
        (l != ids[old] && leader_seen_by(managers[b]).as_ref() == Some(&l)).then_some(l)
    });
    // the old leader stops leading and refuses writes with the quorum error
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("x");
    std::fs::write(&data, "x").unwrap();
    let err = wait_for(30, "the old leader to refuse writes", || {
        let out = managers[old].ctl(&["secret", "create", "lost", data.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && err.contains("no quorum")).then_some(err)
    });
    assert!(err.contains("of 3 managers reachable (need 2)"), "{err}");
    wait_for(10, "the cut-off leader to stop leading", || {
        leader_seen_by(managers[old]).is_none().then_some(())
    });
    // the majority takes writes
    managers[a].ctl_ok(&["secret", "create", "kept", data.to_str().unwrap()]);
    // healed: one leader (the new one) that all three agree on, one history
    net.heal(old + 1);
    wait_for(60, "one leader for all three", || {
        managers
            .iter()
            .all(|m| leader_seen_by(m).as_deref() == Some(new.as_str()))
            .then_some(())
    });
    wait_for(30, "the same log applied everywhere", || {
        let all: Vec<Option<u64>> = managers.iter().map(|m| applied(m)).collect();
        (all[0].is_some() && all.windows(2).all(|w| w[0] == w[1])).then_some(())
    });
    let ls = managers[old].ctl_ok(&["secret", "ls"]);
    assert!(ls.contains("kept") && !ls.contains("lost "), "{ls}");
}
