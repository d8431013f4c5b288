//! Networks with a real `swarmd`, as a user sees them: a stack's networks get subnets from the cluster's
//! address pool (`--default-addr-pool`), tasks distinct addresses and services VIPs; `network rm` of a used
//! network and `network create --subnet` overlapping another are refused with the reason; scaling frees
//! addresses and hands them out again without duplicates; `stack rm` removes the stack's networks.

use std::collections::{BTreeMap, BTreeSet};

use super::cluster::{running, wait_for, Swarmd};

const STACK: &str = r#"
services:
  web:
    image: web:1
    command: ["sh", "-c", "exec sleep 300"]
    stop_grace_period: 1s
    networks: [front, small]
    deploy:
      replicas: 3
  db:
    image: db:1
    command: ["sh", "-c", "exec sleep 300"]
    stop_grace_period: 1s
    networks: [front]
    deploy:
      endpoint_mode: dnsrr
networks:
  front: {}
  small:
    ipam:
      config:
        - subnet: 10.78.0.0/29
"#;

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `network inspect NAME` → (id, subnet, gateway).
fn inspect(d: &Swarmd, name: &str) -> (String, String, String) {
    let out = d.ctl_ok(&["network", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    let cfg = &v[0]["IPAM"]["Config"][0];
    (
        v[0]["Id"].as_str().unwrap_or_default().to_string(),
        cfg["Subnet"].as_str().unwrap_or_default().to_string(),
        cfg["Gateway"].as_str().unwrap_or_default().to_string(),
    )
}

/// The addresses of the tasks of `services` that should run, as `service ps --format json` shows them.
fn live_addresses(d: &Swarmd, services: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in services {
        for v in json_lines(&d.ctl_ok(&["service", "ps", s, "--format", "json"])) {
            if v["DesiredState"] == "Running" {
                out.extend(
                    v["Addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_owned)),
                );
            }
        }
    }
    out
}

fn in_subnet(addr: &str, subnet: &str) -> bool {
    let (Some((a, _)), Some((net, prefix))) = (addr.split_once('/'), subnet.split_once('/')) else {
        return false;
    };
    let a: std::net::Ipv4Addr = a.parse().expect("address");
    let net: std::net::Ipv4Addr = net.parse().expect("subnet");
    let prefix: u32 = prefix.parse().expect("prefix");
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) && addr.ends_with(&format!("/{prefix}"))
}

fn assert_distinct(addrs: &[String], what: &str) {
    let set: BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(
        set.len(),
        addrs.len(),
        "{what}: duplicate addresses in {addrs:?}"
    );
}

#[test]
fn stack_networks_get_subnets_tasks_addresses_and_services_vips() {
    let dir = tempfile::tempdir().unwrap();
    let d = Swarmd::start_in(
        dir,
        &[
            "--default-addr-pool",
            "10.77.0.0/16",
            "--default-addr-pool-mask-length",
            "24",
        ],
    );
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("stack.yml");
    std::fs::write(&file, STACK).unwrap();
    d.ctl_ok(&["stack", "deploy", "-c", file.to_str().unwrap(), "net"]);

    // network ls: docker's columns, the stack's networks and ingress
    let ls = d.ctl_ok(&["network", "ls"]);
    let header: Vec<&str> = ls
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        vec!["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        "{ls}"
    );
    for name in ["ingress", "net_front", "net_small"] {
        let row = ls
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name));
        let row = row.unwrap_or_else(|| panic!("{name} in\n{ls}"));
        assert_eq!(
            row.split_whitespace().skip(2).collect::<Vec<_>>(),
            vec!["overlay", "swarm"],
            "{row}"
        );
    }

    // subnets: from the pool, the user's as written
    let (front_id, front, front_gw) = wait_for(10, "subnets", || {
        let f = inspect(&d, "net_front");
        (!f.1.is_empty()).then_some(f)
    });
    let (small_id, small, _) = inspect(&d, "net_small");
    let (_, ingress, _) = inspect(&d, "ingress");
    assert!(
        front.starts_with("10.77.") && front.ends_with("/24"),
        "{front}"
    );
    assert!(
        ingress.starts_with("10.77.") && ingress != front,
        "{ingress}"
    );
    assert_eq!(small, "10.78.0.0/29");
    assert_eq!(front_gw, front.replace(".0/24", ".1"));

    wait_for(30, "3 web and 1 db task running", || {
        (running(&d, "net_web") == 3 && running(&d, "net_db") == 1).then_some(())
    });

    // tasks: one address per network, distinct, inside the subnets
    let addrs = live_addresses(&d, &["net_web", "net_db"]);
    assert_eq!(addrs.len(), 3 * 2 + 1, "{addrs:?}");
    assert_distinct(&addrs, "tasks");
    let on_front: Vec<&String> = addrs.iter().filter(|a| in_subnet(a, &front)).collect();
    let on_small: Vec<&String> = addrs.iter().filter(|a| in_subnet(a, &small)).collect();
    assert_eq!((on_front.len(), on_small.len()), (4, 3), "{addrs:?}");

    // service inspect: one VIP per network for vip mode, none for dnsrr, none shared with a task
    let web: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["service", "inspect", "net_web"])).unwrap();
    let vips: BTreeMap<String, String> = web[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["NetworkID"].as_str().unwrap_or_default().to_string(),
                v["Addr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        vips.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([front_id.clone(), small_id.clone()]),
        "{web}"
    );
    assert!(
        in_subnet(&vips[&front_id], &front) && in_subnet(&vips[&small_id], &small),
        "{vips:?}"
    );
    assert!(
        vips.values().all(|v| !addrs.contains(v)),
        "VIPs {vips:?} vs tasks {addrs:?}"
    );
    let db: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["service", "inspect", "net_db"])).unwrap();
    assert_eq!(
        db[0]["Endpoint"]["VirtualIPs"],
        serde_json::json!([]),
        "dnsrr: no VIP"
    );

    // task inspect: the same addresses, with the network names
    let first = json_lines(&d.ctl_ok(&["service", "ps", "net_db", "--format", "json"]))
        .into_iter()
        .find(|v| v["DesiredState"] == "Running")
        .expect("a db task");
    let task: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["task", "inspect", first["ID"].as_str().unwrap()]))
            .unwrap();
    let att = &task[0]["NetworksAttachments"][0];
    assert_eq!(att["Network"]["Spec"]["Name"], "net_front");
    assert_eq!(att["Addresses"], first["Addresses"]);

    // a used network cannot be removed; an overlapping subnet cannot be created
    let out = d.ctl(&["network", "rm", "net_front"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("network net_front is in use by service net_db, service net_web"),
        "{err}"
    );
    let out = d.ctl(&["network", "create", "--subnet", "10.78.0.0/24", "clash"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("subnet 10.78.0.0/24 overlaps 10.78.0.0/29 of network net_small"),
        "{err}"
    );
    d.ctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.99.0.0/24",
        "--label",
        "team=a",
        "extra",
    ]);
    let (_, extra, extra_gw) = wait_for(10, "extra allocated", || {
        let e = inspect(&d, "extra");
        (!e.2.is_empty()).then_some(e)
    });
    assert_eq!(
        (extra.as_str(), extra_gw.as_str()),
        ("10.99.0.0/24", "10.99.0.1")
    );
    assert_eq!(d.ctl_ok(&["network", "rm", "extra"]).trim(), "extra");

    // scaling: the /29 holds the VIP and 4 tasks; scaling 3 → 1 → 4 needs freed addresses again
    let before: BTreeSet<String> = live_addresses(&d, &["net_web"])
        .into_iter()
        .filter(|a| in_subnet(a, &small))
        .collect();
    d.ctl_ok(&["service", "scale", "net_web=1"]);
    wait_for(30, "web scaled to 1", || {
        (running(&d, "net_web") == 1 && live_addresses(&d, &["net_web"]).len() == 2).then_some(())
    });
    let kept: BTreeSet<String> = live_addresses(&d, &["net_web"])
        .into_iter()
        .filter(|a| in_subnet(a, &small))
        .collect();
    let freed: BTreeSet<String> = before.difference(&kept).cloned().collect();
    assert_eq!(freed.len(), 2, "{before:?} → {kept:?}");
    d.ctl_ok(&["service", "scale", "net_web=4"]);
    wait_for(30, "web scaled to 4", || {
        (running(&d, "net_web") == 4).then_some(())
    });
    let after = live_addresses(&d, &["net_web", "net_db"]);
    assert_distinct(&after, "after scaling");
    let small_now: BTreeSet<String> = after
        .iter()
        .filter(|a| in_subnet(a, &small))
        .cloned()
        .collect();
    assert_eq!(small_now.len(), 4, "{after:?}");
    assert!(
        small_now.is_superset(&freed),
        "freed {freed:?} handed out again: {small_now:?}"
    );
    assert!(
        !small_now.contains(&vips[&small_id]),
        "the VIP stays the service's"
    );

    // stack rm: the stack's networks go once their tasks have stopped; ingress stays
    d.ctl_ok(&["stack", "rm", "net"]);
    wait_for(30, "the stack's networks removed", || {
        let ls = d.ctl_ok(&["network", "ls"]);
        (!ls.contains("net_front") && !ls.contains("net_small")).then_some(())
    });
    assert!(d.ctl_ok(&["network", "ls"]).contains("ingress"));
}
