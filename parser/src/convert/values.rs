//! Validators and small value parsers for flag and argument values: Go durations, file modes,
//! port specs, byte sizes, signals and checksums.

use std::net::IpAddr;

/// Go's `time.ParseDuration`, in nanoseconds: a sequence of decimal numbers with units
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), optionally signed; `0` alone is allowed.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {}", crate::ast::go_quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    crate::ast::go_quote(s)
                ))
            }
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    crate::ast::go_quote(unit),
                    crate::ast::go_quote(s)
                ))
            }
        };
        total += value * scale;
        if total > i64::MAX as f64 {
            return Err(bad());
        }
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

/// Go's `time.Duration.String()` (`1s`, `1m30s`, `100ms`, `1.5µs`, `0s`).
pub fn format_go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let width = unit.to_string().len() - 1;
        let digits = format!("{rem:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let total_secs = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = total_secs % 60;
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&secs);
    out.push('s');
    out
}

/// `--chmod`: an octal mode (`0644`, `755`) or a symbolic one (`u+x`, `a=rwx,go-w`).
pub fn validate_chmod(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.chars().all(|c| ('0'..='7').contains(&c))
        && u32::from_str_radix(s, 8).is_ok()
    {
        return Ok(());
    }
    let clause_ok = |c: &str| {
        let who_len = c.len() - c.trim_start_matches(['u', 'g', 'o', 'a']).len();
        let rest = &c[who_len..];
        let mut chars = rest.chars();
        match chars.next() {
            Some('+' | '-' | '=') => {}
            _ => return false,
        }
        let perms = chars.as_str();
        perms.chars().all(|p| "rwxXst".contains(p)) || matches!(perms, "u" | "g" | "o")
    };
    if !s.is_empty() && s.split(',').all(clause_ok) {
        return Ok(());
    }
    Err(format!(
        "invalid chmod parameter {}: must be an octal number (e.g. 0755) or a symbolic mode (e.g. u+x)",
        crate::ast::go_quote(s)
    ))
}

/// The exposed-port keys (`80/tcp`) one `EXPOSE` spec produces:
/// `[ip:][hostPort:]containerPort[/proto]`, where ports may be ranges `a-b`.
pub fn exposed_ports(spec: &str) -> Result<Vec<String>, String> {
    let range = parse_port_spec(spec)?;
    Ok((range.start..=range.end)
        .map(|p| format!("{p}/{}", range.proto))
        .collect())
}

/// The container ports of one EXPOSE spec: `start..=end` with a lower-case protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
    pub proto: String,
}

/// Validates one EXPOSE spec (see [`exposed_ports`]) without listing every port of a range.
pub fn parse_port_spec(spec: &str) -> Result<PortRange, String> {
    let fail = |why: &str| format!("invalid port: {}: {why}", crate::ast::go_quote(spec));
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1];
    let (ip, host) = match n {
        1 => (String::new(), ""),
        2 => (String::new(), parts[0]),
        3 => (parts[0].to_string(), parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2]),
    };
    let (proto, port) = split_proto(container);
    let mut ip = ip;
    if let Some(inner) = ip.strip_prefix('[') {
        match inner.strip_suffix(']') {
            Some(v6) if !v6.contains(['[', ']']) => ip = v6.to_string(),
            _ => return Err(fail(&format!("invalid IP address {ip}"))),
        }
    }
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(fail(&format!("invalid IP address: {ip}")));
    }
    if port.is_empty() {
        return Err(fail("no port specified"));
    }
    let (start, end) =
        port_range(port).map_err(|_| fail(&format!("invalid containerPort: {port}")))?;
    if !host.is_empty() {
        let (hs, he) = port_range(host).map_err(|_| fail(&format!("invalid hostPort: {host}")))?;
        if he - hs != end - start && end != start {
            return Err(fail(&format!(
                "invalid ranges specified for container and host Ports: {port} and {host}"
            )));
        }
    }
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(fail(&format!("invalid proto: {proto}")));
    }
    let (start, end) = (
        u16::try_from(start).unwrap_or(u16::MAX),
        u16::try_from(end).unwrap_or(u16::MAX),
    );
    Ok(PortRange { start, end, proto })
}

fn split_proto(raw: &str) -> (&str, &str) {
    let mut parts = raw.split('/');
    let port = parts.next().unwrap_or("");
    if raw.is_empty() || port.is_empty() {
        return ("", "");
    }
    match parts.next() {
        None | Some("") => ("tcp", port),
        Some(proto) => (proto, port),
    }
}

fn port_range(s: &str) -> Result<(u32, u32), ()> {
    let one = |p: &str| -> Result<u32, ()> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        p.parse::<u16>().map(u32::from).map_err(|_| ())
    };
    match s.split_once('-') {
        None => one(s).map(|p| (p, p)),
        Some((a, b)) => {
            let b = b.split('-').next().unwrap_or("");
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(());
            }
            Ok((a, b))
        }
    }
}

/// Docker's `RAMInBytes`: `64m`, `1g`, `512`, `1.5GiB` (binary multiples).
pub fn parse_ram_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size: {}", crate::ast::go_quote(s));
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_len);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut chars = unit.chars().peekable();
    let mult: f64 = match chars.peek() {
        Some('k') => 1024f64,
        Some('m') => 1024f64.powi(2),
        Some('g') => 1024f64.powi(3),
        Some('t') => 1024f64.powi(4),
        Some('p') => 1024f64.powi(5),
        _ => 1.0,
    };
    if mult > 1.0 {
        chars.next();
    }
    let tail: String = chars.collect();
    if !matches!(tail.as_str(), "" | "b" | "i" | "ib") {
        return Err(bad());
    }
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// `STOPSIGNAL`: a number (1–64), a name with or without `SIG`, or `RTMIN+n` / `RTMAX-n`.
pub fn validate_signal(s: &str) -> Result<(), String> {
    let bad = || format!("invalid signal: {s}");
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return Ok(());
    }
    for (base, sign) in [("RTMIN+", 1), ("RTMAX-", -1)] {
        if let Some(n) = name.strip_prefix(base).and_then(|n| n.parse::<i32>().ok()) {
            let _ = sign;
            if (1..=15).contains(&n) {
                return Ok(());
            }
        }
    }
    let names = SIGNALS.iter().copied().chain(["RTMIN", "RTMAX"]);
    match super::suggest::closest(name, names) {
        Some(c) => Err(format!("{} (did you mean SIG{c}?)", bad())),
        None => Err(bad()),
    }
}

/// `ADD --checksum`: `sha256:<64 hex>`, `sha384:<96 hex>`, `sha512:<128 hex>`, or for git
/// sources a bare commit id (40 or 64 hex digits).
pub fn validate_checksum(s: &str) -> Result<(), String> {
    let hex = |h: &str, n: usize| h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match s.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha384", h)) => hex(h, 96),
        Some(("sha512", h)) => hex(h, 128),
        Some(_) => false,
        None => hex(s, 40) || hex(s, 64),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid checksum {}: expected sha256:<64 hex digits> (or sha384/sha512, or a git commit id)",
            crate::ast::go_quote(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! table {
        ($f:ident: $($input:expr => $want:expr;)*) => {$(
            assert_eq!($f($input), $want, "input {:?}", $input);
        )*};
    }

    #[test]
    fn durations() {
        table! { parse_go_duration:
            "0" => Ok(0);
            "1ms" => Ok(1_000_000);
            "1.5s" => Ok(1_500_000_000);
            "1h2m3s" => Ok(3_723_000_000_000);
            "-2us" => Ok(-2_000);
            "50ns" => Ok(50);
            "abc" => Err("time: invalid duration \"abc\"".to_string());
            "10" => Err("time: missing unit in duration \"10\"".to_string());
            "3d" => Err("time: unknown unit \"d\" in duration \"3d\"".to_string());
            "" => Err("time: invalid duration \"\"".to_string());
        }
        table! { format_go_duration:
            0i64 => "0s"; 1_000_000_000i64 => "1s"; 10_000_000_000i64 => "10s"; 100_000_000 => "100ms";
            90_000_000_000i64 => "1m30s"; 3_600_000_000_000i64 => "1h0m0s"; 1_500 => "1.5µs"; 1_500_000_000 => "1.5s";
        }
    }

    #[test]
    fn chmod() {
        for ok in ["0644", "755", "7777", "u+x", "a=rwx,go-w", "g=u"] {
            assert_eq!(validate_chmod(ok), Ok(()), "{ok}");
        }
        for bad in ["99z", "", "8", "u*x", "rwx"] {
            assert!(validate_chmod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        let p = |s: &str| exposed_ports(s);
        assert_eq!(p("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(p("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(p("8000-8002/tcp").unwrap().len(), 3);
        assert_eq!(p("[::1]:80:80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(
            p("80/xyz"),
            Err("invalid port: \"80/xyz\": invalid proto: xyz".to_string())
        );
        assert_eq!(
            p(""),
            Err("invalid port: \"\": no port specified".to_string())
        );
        assert!(p("localhost:1:1").is_err());
        assert!(p("70000").is_err());
        assert!(p("10-5").is_err());
    }

    #[test]
    fn sizes_signals_checksums() {
        assert_eq!(parse_ram_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_ram_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("512"), Ok(512));
        assert!(parse_ram_bytes("12q").is_err());
        assert!(validate_signal("SIGTERM").is_ok());
        assert!(validate_signal("kill").is_ok());
        assert!(validate_signal("9").is_ok());
        assert!(validate_signal("RTMIN+3").is_ok());
        assert_eq!(
            validate_signal("SIGTREM"),
            Err("invalid signal: SIGTREM (did you mean SIGTERM?)".to_string())
        );
        assert!(validate_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_checksum("sha256:abc").is_err());
    }
}
