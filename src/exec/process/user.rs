//! Resolves a task's `user` (`name`, `uid`, `uid:gid`, `name:group`) to numeric credentials by
//! parsing `/etc/passwd` and `/etc/group` ourselves, with Docker's error wording.
//!
//! Must not: change the credentials of any process (the shim's child does that).

use serde::{Deserialize, Serialize};

/// Numeric identity a task runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (primary group first).
    pub groups: Vec<u32>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

/// Resolves `user` against the given passwd and group file contents.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Credentials, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() {
        return Err(format!(
            "unable to find user {user}: no matching entries in passwd file"
        ));
    }
    // A numeric uid need not exist in passwd (then its primary group is 0, like Docker).
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    format!("unable to find user {user_part}: no matching entries in passwd file")
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part
            .parse::<u32>()
            .map_err(|e| format!("invalid user {user_part}: {e}"))?,
    };
    let gid = match group_part {
        None | Some("") => entry.as_ref().map_or(0, |e| e.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    let mut groups = vec![gid];
    if let Some(e) = &entry {
        for g in group_entries(group).filter(|g| g.members.contains(&e.name)) {
            if !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(Credentials { uid, gid, groups })
}

/// Resolves `user` against this host's `/etc/passwd` and `/etc/group` (missing files read as empty).
pub fn resolve_host_user(user: &str) -> Result<Credentials, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_user(user, &passwd, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        broken line\n";
    const GROUP: &str =
        "root:x:0:\nwww-data:x:33:\napp:x:1000:\ndocker:x:999:app,other\nadm:x:4:app\n";

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn resolves_like_docker() {
        let table: &[(&str, Result<Credentials, &str>)] = &[
            ("root", Ok(creds(0, 0, &[0]))),
            ("app", Ok(creds(1000, 1000, &[1000, 999, 4]))),
            ("1000", Ok(creds(1000, 1000, &[1000, 999, 4]))),
            ("4242", Ok(creds(4242, 0, &[0]))),
            ("4242:7", Ok(creds(4242, 7, &[7]))),
            ("app:www-data", Ok(creds(1000, 33, &[33, 999, 4]))),
            ("www-data:5", Ok(creds(33, 5, &[5]))),
            (
                "nosuch",
                Err("unable to find user nosuch: no matching entries in passwd file"),
            ),
            (
                "app:nogroup",
                Err("unable to find group nogroup: no matching entries in group file"),
            ),
            (
                "",
                Err("unable to find user : no matching entries in passwd file"),
            ),
        ];
        for (input, want) in table {
            let got = resolve_user(input, PASSWD, GROUP);
            assert_eq!(got, want.clone().map_err(String::from), "{input:?}");
        }
    }
}
