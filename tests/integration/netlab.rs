//! Helpers the root-only network tests share: network namespaces the test creates (one alone, or several
//! joined by veth pairs to a bridge in a hub namespace, addresses only inside them), removed on drop, and
//! commands run inside a task's namespaces (`nsenter`), with what busybox's `nslookup` answered.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// `ip ARGS`, quietly: whether it succeeded.
pub(crate) fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) fn have(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

pub(crate) fn busybox() -> Option<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| have(p))
}

/// What the service-networking tests need: busybox, root, nftables' `nft`, `nsenter`; `None` (with the line
/// saying why printed) when something is missing.
pub(crate) fn service_net_tools() -> Option<&'static str> {
    let Some(busybox) = busybox() else {
        eprintln!(
            "skipped: service networking needs a busybox binary (apt-get install busybox-static)"
        );
        return None;
    };
    if !nix::unistd::geteuid().is_root()
        || !have("/usr/sbin/nft")
        || !have("/usr/bin/nsenter")
        || !ip(&["netns", "list"])
    {
        eprintln!("skipped: service networking needs root, `ip netns`, nftables' nft and nsenter");
        return None;
    }
    Some(busybox)
}

/// A network namespace of this test with its loopback up, deleted on drop (with everything made in it).
pub(crate) struct Ns(pub String);

impl Ns {
    /// `None` when this machine cannot make one.
    pub fn create(name: String) -> Option<Ns> {
        ip(&["netns", "del", &name]); // a leftover of a killed run
        let ns = Ns(name);
        (ip(&["netns", "add", &ns.0]) && ip(&["-n", &ns.0, "link", "set", "lo", "up"]))
            .then_some(ns)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

/// Node namespaces `1..=n`, each with a veth to the bridge `br0` of a hub namespace, node `i` at
/// `10.OCTET.SUBNET.i/24` on its end; all of it removed on drop (deleting a namespace deletes its links).
pub(crate) struct Lab {
    prefix: String,
    octet: u8,
    subnet: u8,
    // dropped after the nodes: the hub last
    nodes: Vec<Ns>,
    _hub: Ns,
}

impl Lab {
    /// `tag` (two letters) keeps the names of tests running at once apart; `None` when this machine cannot
    /// make namespaces.
    pub fn create(tag: &str, n: usize, octet: u8) -> Option<Lab> {
        let pid = std::process::id();
        let prefix = format!("{tag}{}", pid % 100_000);
        let hub = Ns::create(format!("{prefix}-hub"))?;
        if !(ip(&["-n", &hub.0, "link", "add", "br0", "type", "bridge"])
            && ip(&["-n", &hub.0, "link", "set", "br0", "up"]))
        {
            return None;
        }
        let mut lab = Lab {
            prefix,
            octet,
            subnet: (pid % 200) as u8 + 20,
            nodes: Vec::new(),
            _hub: hub,
        };
        for i in 1..=n {
            let ns = Ns::create(lab.ns(i))?;
            let (a, b) = (format!("{}n{i}a", lab.prefix), lab.hub_link(i));
            let cidr = format!("{}/24", lab.addr(i));
            let hub = &lab._hub.0;
            let ok = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
                && ip(&["link", "set", &a, "netns", &ns.0])
                && ip(&["link", "set", &b, "netns", hub])
                && ip(&["-n", &ns.0, "addr", "add", &cidr, "dev", &a])
                && ip(&["-n", &ns.0, "link", "set", &a, "up"])
                && ip(&["-n", hub, "link", "set", &b, "master", "br0"])
                && ip(&["-n", hub, "link", "set", &b, "up"]);
            lab.nodes.push(ns);
            if !ok {
                ip(&["link", "del", &a]); // when it never left this namespace
                return None;
            }
        }
        Some(lab)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.{}.{i}", self.octet, self.subnet)
    }

    /// The hub's end of node `i`'s link (interface names stay under 16 bytes).
    fn hub_link(&self, i: usize) -> String {
        format!("{}n{i}b", self.prefix)
    }

    /// Cuts node `i` off the bridge.
    pub fn cut(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self._hub.0,
            "link",
            "set",
            &self.hub_link(i),
            "down"
        ]));
    }

    /// Puts node `i` back on the bridge.
    pub fn heal(&self, i: usize) {
        assert!(ip(&[
            "-n",
            &self._hub.0,
            "link",
            "set",
            &self.hub_link(i),
            "up"
        ]));
    }
}

/// `args` run inside the network namespace of process `pid` (and its mount namespace too with `mount`: its
/// `/etc/resolv.conf`): stdout, or `None` on failure.
pub(crate) fn in_task_ns(pid: u32, mount: bool, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n"]);
    if mount {
        cmd.arg("-m");
    }
    let out = cmd.arg("--").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`in_task_ns`] with the task's mount namespace: names resolve through the task's resolver.
pub(crate) fn in_task(pid: u32, args: &[&str]) -> Option<String> {
    in_task_ns(pid, true, args)
}

/// One HTTP GET from inside task `pid` (its resolver too), the body trimmed (busybox's wget crashes with -T:
/// `timeout`).
pub(crate) fn wget_in_task(pid: u32, busybox: &str, url: &str) -> Option<String> {
    in_task(
        pid,
        &["timeout", "5", busybox, "wget", "-q", "-O", "-", url],
    )
    .map(|b| b.trim().to_string())
}

/// One HTTP GET from inside network namespace `ns`, the body trimmed.
pub(crate) fn wget_in_ns(ns: &str, busybox: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "timeout", "5", busybox, "wget", "-q", "-O", "-", url,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The answers of an nslookup (the server's own line carries a port and is left out).
pub(crate) fn addresses(nslookup: &str) -> BTreeSet<String> {
    nslookup
        .lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(str::trim)
        .filter(|a| !a.contains(':'))
        .map(str::to_string)
        .collect()
}

/// The pid of the process whose command line is exactly `marker`.
pub(crate) fn pid_of(marker: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("^{marker}$")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .find(|p: &u32| *p != std::process::id())
}
