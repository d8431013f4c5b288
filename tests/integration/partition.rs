//! A network partition between managers, with network namespaces the test creates (three managers, each in its
//! own namespace, joined by veth pairs to a bridge in a fourth; only addresses inside those namespaces carry
//! traffic): the leader cut off, the majority elects a new leader, the old one stops leading and refuses
//! writes with the quorum error, and once healed there is one leader and one history without the refused write.
//! Needs root and `ip`; skipped (with a line saying so) otherwise.

use super::cluster::{wait_for, Swarmd};
use super::netlab::Lab;

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
    let Some(net) = Lab::create("sp", 3, 231) else {
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
