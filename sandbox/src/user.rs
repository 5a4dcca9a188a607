//! `USER` resolution against the rootfs's `/etc/passwd` and `/etc/group`, with the semantics of
//! runc/BuildKit: `name`, `uid`, `name:group`, `uid:gid`; a numeric uid need not exist; names must;
//! supplementary groups come from `/etc/group` memberships when no group is given, always
//! preceded by the primary group.

/// The identity the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// From passwd; `None` when the user has no entry.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry<'_>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0],
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry<'_>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0],
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` (None = root) given the contents of passwd and group (None = file missing).
pub(crate) fn resolve(
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Identity, String> {
    let spec = user.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_group).unwrap_or_default();

    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => {
            let found = users.iter().find(|e| e.name == user_part);
            if found.is_none() {
                return Err(if passwd.is_none() {
                    format!("unable to find user {user_part}: no /etc/passwd in the rootfs")
                } else {
                    format!("unable to find user {user_part}: no matching entries in passwd file")
                });
            }
            found
        }
    };
    let uid = entry
        .map(|e| e.uid)
        .unwrap_or_else(|| user_part.parse().unwrap_or(0));
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    let home = entry.map(|e| e.home.to_string()).filter(|h| !h.is_empty());

    let mut supplementary = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => match groups.iter().find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => {
                        return Err(if group.is_none() {
                            format!("unable to find group {g}: no /etc/group in the rootfs")
                        } else {
                            format!("unable to find group {g}: no matching entries in group file")
                        })
                    }
                },
            };
        }
        _ => {
            if let Some(e) = entry {
                for g in &groups {
                    if g.members.contains(&e.name) && !supplementary.contains(&g.gid) {
                        supplementary.push(g.gid);
                    }
                }
            }
        }
    }
    // The primary group is always a supplementary group too (BuildKit and containerd prepend
    // it, so that `id` and access checks agree).
    if !supplementary.contains(&gid) {
        supplementary.insert(0, gid);
    }
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        nohome:x:1002:1002::\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        alice:x:1000:\n\
        wheel:x:10:alice,bob\n\
        audio:x:29:alice\n\
        staff:x:50:\n";

    fn id(uid: u32, gid: u32, groups: &[u32], home: Option<&str>) -> Identity {
        Identity {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.map(str::to_string),
        }
    }

    macro_rules! user_table {
        ($($name:ident: $user:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(resolve($user, Some(PASSWD), Some(GROUP)), $want);
            }
        )*};
    }

    user_table! {
        default_is_root: None => Ok(id(0, 0, &[0], Some("/root")));
        name: Some("alice") => Ok(id(1000, 1000, &[1000, 10, 29], Some("/home/alice")));
        uid_in_passwd: Some("1000") => Ok(id(1000, 1000, &[1000, 10, 29], Some("/home/alice")));
        uid_not_in_passwd: Some("4242") => Ok(id(4242, 0, &[0], None));
        uid_gid: Some("4242:4343") => Ok(id(4242, 4343, &[4343], None));
        name_group_name: Some("alice:staff") => Ok(id(1000, 50, &[50], Some("/home/alice")));
        name_numeric_group: Some("alice:7") => Ok(id(1000, 7, &[7], Some("/home/alice")));
        empty_home_is_none: Some("nohome") => Ok(id(1002, 1002, &[1002], None));
        unknown_user: Some("mallory") => Err("unable to find user mallory: no matching entries in passwd file".to_string());
        unknown_group: Some("alice:nogroup") => Err("unable to find group nogroup: no matching entries in group file".to_string());
    }

    #[test]
    fn names_without_passwd_file_fail_clearly() {
        assert_eq!(
            resolve(Some("alice"), None, None),
            Err("unable to find user alice: no /etc/passwd in the rootfs".to_string())
        );
        assert_eq!(
            resolve(Some("12:34"), None, None),
            Ok(id(12, 34, &[34], None))
        );
        assert_eq!(resolve(None, None, None), Ok(id(0, 0, &[0], None)));
    }
}
