//! The generated `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

/// `/etc/hosts`: loopback names plus the sandbox's hostname.
pub(crate) fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// `/etc/hostname`.
pub(crate) fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// Public resolvers used when a new network namespace leaves no usable nameserver (Docker's
/// fallback).
const FALLBACK_NAMESERVERS: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// `/etc/resolv.conf` derived from the host's. With the host network it is kept as is; in a new
/// network namespace, loopback nameservers (systemd-resolved's 127.0.0.53, a local dnsmasq) cannot
/// be reached, so they are dropped, and public resolvers are added when none remain.
pub(crate) fn resolv_conf(host: &str, new_netns: bool) -> String {
    if !new_netns {
        return host.to_string();
    }
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if is_loopback(addr) {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

fn is_loopback(addr: &str) -> bool {
    let addr = addr.split('%').next().unwrap_or(addr);
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_sandbox() {
        assert_eq!(
            hosts("box"),
            "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert_eq!(hostname_file("box"), "box\n");
    }

    #[test]
    fn host_network_keeps_resolv_conf() {
        let host = "nameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(resolv_conf(host, false), host);
    }

    #[test]
    fn new_netns_drops_loopback_nameservers() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\nsearch example.com\n";
        assert_eq!(
            resolv_conf(host, true),
            "# generated\nnameserver 10.0.0.2\nsearch example.com\n"
        );
    }

    #[test]
    fn new_netns_falls_back_to_public_resolvers() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host, true),
            "options edns0 trust-ad\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }
}
