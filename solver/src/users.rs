//! User and group names, resolved through the image's own `/etc/passwd` and `/etc/group`.

use crate::layered::LayeredView;

fn lookup_id(file: Option<Vec<u8>>, name: &str) -> Option<(u32, Option<u32>)> {
    let text = String::from_utf8_lossy(&file?).to_string();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let id = f[2].parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok());
            return Some((id, gid));
        }
    }
    None
}

/// Resolves `user[:group]` (names or numbers) for `--chown` and WORKDIR ownership. A user
/// without a group takes the user's primary group (or the same number, for numeric users).
pub fn resolve_chown(view: &LayeredView, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, lookup_by_uid(view, n)),
        Err(_) => {
            let (id, gid) = lookup_id(view.read_file("/etc/passwd"), user)
                .ok_or_else(|| format!("unable to find user {user:?} in the image's /etc/passwd"))?;
            (id, gid)
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(view.read_file("/etc/group"), g)
                .map(|(id, _)| id)
                .ok_or_else(|| format!("unable to find group {g:?} in the image's /etc/group"))?,
        },
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

fn lookup_by_uid(view: &LayeredView, uid: u32) -> Option<u32> {
    let text = String::from_utf8_lossy(&view.read_file("/etc/passwd")?).to_string();
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n").unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let v = LayeredView::new(vec![t.path().to_path_buf()]);
        assert_eq!(resolve_chown(&v, "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_chown(&v, "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_chown(&v, "1000").unwrap(), (1000, 1001));
        assert_eq!(resolve_chown(&v, "42:7").unwrap(), (42, 7));
        assert_eq!(resolve_chown(&v, "42").unwrap(), (42, 42));
        assert!(resolve_chown(&v, "nobody").unwrap_err().contains("nobody"));
        assert!(resolve_chown(&v, "app:wheel").unwrap_err().contains("wheel"));
    }
}
