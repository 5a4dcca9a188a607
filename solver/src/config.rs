//! How each instruction changes the image config, following BuildKit's dockerfile2llb rules.

use std::collections::BTreeMap;

use forge_oci::image::EmptyObject;
use forge_oci::{HealthConfig, ImageConfig};
use forge_parser::{CmdForm, Healthcheck, InstructionKind};

/// `/bin/sh -c`, the default SHELL on Linux.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// The argv for a CMD/ENTRYPOINT/RUN in shell or exec form.
pub fn argv(form: &CmdForm, shell: &[String]) -> Vec<String> {
    match form {
        CmdForm::Exec(v) => v.clone(),
        CmdForm::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

/// The stage's current SHELL.
pub fn shell_of(cfg: &ImageConfig) -> Vec<String> {
    cfg.config.shell.clone().filter(|s| !s.is_empty()).unwrap_or_else(default_shell)
}

/// Sets or replaces `KEY=value` in an env list, keeping the original order.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map(|(k, _)| k) == Some(key) {
            *e = entry;
            return;
        }
    }
    env.push(entry);
}

/// Looks a key up in an env list.
pub fn get_env<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|e| match e.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        _ => None,
    })
}

/// Joins a WORKDIR onto the current one, as `path.Join` would.
pub fn join_workdir(current: &str, next: &str) -> String {
    let joined = if next.starts_with('/') { next.to_string() } else { format!("{}/{}", if current.is_empty() { "/" } else { current }, next) };
    clean_abs(&joined)
}

/// Cleans an absolute path: collapses `//`, `.` and `..`.
pub fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Normalizes an EXPOSE spec to `port/proto` keys (ranges expand).
pub fn expose_keys(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // A host part (ip:port or ip:hostport:port) keeps only the container port.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |s: &str| s.parse::<u16>().map_err(|_| format!("invalid containerPort: {s}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range: {ports}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Renders a string list the way Go's `%q` prints a slice: `["a" "b"]`.
pub fn go_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| serde_json::to_string(s).unwrap_or_default()).collect();
    format!("[{}]", items.join(" "))
}

/// Renders a string list the way Go's `%v` prints a slice: `[a b]`, nothing quoted.
pub fn go_plain_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Renders nanoseconds the way Go's `time.Duration` prints itself: `0s`, `1.5s`, `1m30s`,
/// `1h0m0s`, `500ms`, `2µs`, `10ns`.
pub fn go_duration(ns: i64) -> String {
    fn scaled(v: u64, unit: u64) -> String {
        let (int, rem) = (v / unit, v % unit);
        if rem == 0 {
            return int.to_string();
        }
        let width = unit.ilog10() as usize;
        let frac = format!("{rem:0width$}");
        format!("{int}.{}", frac.trim_end_matches('0'))
    }
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    const S: u64 = 1_000_000_000;
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", scaled(u, 1_000))
    } else if u < S {
        format!("{}ms", scaled(u, 1_000_000))
    } else {
        let (h, m) = (u / (3600 * S), (u / (60 * S)) % 60);
        let secs = format!("{}s", scaled(u % (60 * S), S));
        if h > 0 {
            format!("{h}h{m}m{secs}")
        } else if m > 0 {
            format!("{m}m{secs}")
        } else {
            secs
        }
    };
    format!("{sign}{body}")
}

/// The HEALTHCHECK history text: BuildKit prints the config struct with Go's `%+v`.
pub fn healthcheck_history(hc: &HealthConfig) -> String {
    let d = |v: Option<i64>| go_duration(v.unwrap_or(0));
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_plain_list(hc.test.as_deref().unwrap_or(&[])),
        d(hc.interval),
        d(hc.timeout),
        d(hc.start_period),
        d(hc.start_interval),
        hc.retries.unwrap_or(0)
    )
}

/// The history text of an (expanded) COPY or ADD, as BuildKit writes it: the keyword, then
/// `--parents`, `--chown=…` and `--chmod=…` when given (never `--from`, `--link` or
/// `--exclude`), the sources, heredoc sources as `<<NAME`, and the destination. Other
/// instructions give None.
pub fn copy_history(kind: &InstructionKind) -> Option<String> {
    let (keyword, common, parents) = match kind {
        InstructionKind::Copy(c) => ("COPY", &c.common, c.parents),
        InstructionKind::Add(a) => ("ADD", &a.common, false),
        _ => return None,
    };
    let mut words = vec![keyword.to_string()];
    if parents {
        words.push("--parents".into());
    }
    if let Some(c) = &common.chown {
        words.push(format!("--chown={c}"));
    }
    if let Some(m) = &common.chmod {
        words.push(format!("--chmod={m}"));
    }
    words.extend(common.sources.iter().cloned());
    words.extend(common.heredocs.iter().map(|h| format!("<<{}", h.name)));
    words.push(common.dest.clone());
    Some(words.join(" "))
}

/// Applies a metadata instruction (already expanded) to the config. Returns the history
/// `created_by` text. `cmd_set` tracks whether this stage set CMD, so ENTRYPOINT only resets an
/// inherited one. Instructions that touch the filesystem are not handled here.
pub fn apply_metadata(cfg: &mut ImageConfig, kind: &InstructionKind, cmd_set: &mut bool) -> Option<String> {
    let c = &mut cfg.config;
    match kind {
        InstructionKind::Env(kvs) => {
            let env = c.env.get_or_insert_with(Vec::new);
            let mut parts = Vec::new();
            for kv in kvs {
                set_env(env, &kv.key, &kv.value);
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            Some(format!("ENV {}", parts.join(" ")))
        }
        InstructionKind::Label(kvs) => {
            let labels = c.labels.get_or_insert_with(BTreeMap::new);
            let mut parts = Vec::new();
            for kv in kvs {
                labels.insert(kv.key.clone(), kv.value.clone());
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            Some(format!("LABEL {}", parts.join(" ")))
        }
        InstructionKind::Maintainer(m) => {
            cfg.author = Some(m.clone());
            Some(format!("MAINTAINER {m}"))
        }
        InstructionKind::Cmd(cl) => {
            let shell = c.shell.clone().filter(|s| !s.is_empty()).unwrap_or_else(default_shell);
            let v = argv(&cl.form, &shell);
            let text = format!("CMD {}", go_list(&v));
            c.cmd = Some(v);
            // BuildKit marks every CMD so (a Docker-compatibility field, meaningful on Windows).
            c.args_escaped = Some(true);
            *cmd_set = true;
            Some(text)
        }
        InstructionKind::Entrypoint(cl) => {
            let shell = c.shell.clone().filter(|s| !s.is_empty()).unwrap_or_else(default_shell);
            let v = argv(&cl.form, &shell);
            let text = format!("ENTRYPOINT {}", go_list(&v));
            c.entrypoint = Some(v);
            if !*cmd_set {
                c.cmd = None;
            }
            Some(text)
        }
        InstructionKind::Shell(v) => {
            c.shell = Some(v.clone());
            Some(format!("SHELL {}", go_plain_list(v)))
        }
        InstructionKind::User(u) => {
            c.user = Some(u.clone());
            Some(format!("USER {u}"))
        }
        InstructionKind::Expose(ports) => {
            // History lists this instruction's ports in order, ranges expanded (`EXPOSE [80/tcp]`).
            let map = c.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut listed = Vec::new();
            for p in ports {
                if let Ok(keys) = expose_keys(p) {
                    for k in keys {
                        map.insert(k.clone(), EmptyObject {});
                        listed.push(k);
                    }
                }
            }
            Some(format!("EXPOSE {}", go_plain_list(&listed)))
        }
        InstructionKind::Volume(vols) => {
            let map = c.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                map.insert(v.clone(), EmptyObject {});
            }
            Some(format!("VOLUME {}", go_plain_list(vols)))
        }
        InstructionKind::StopSignal(s) => {
            c.stop_signal = Some(s.clone());
            Some(format!("STOPSIGNAL {s}"))
        }
        InstructionKind::Healthcheck(h) => {
            let hc = match h {
                Healthcheck::None => HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() },
                Healthcheck::Check { test, interval, timeout, start_period, start_interval, retries } => HealthConfig {
                    test: Some(test.clone()),
                    interval: *interval,
                    timeout: *timeout,
                    start_period: *start_period,
                    start_interval: *start_interval,
                    retries: *retries,
                },
            };
            let text = healthcheck_history(&hc);
            c.healthcheck = Some(hc);
            Some(text)
        }
        InstructionKind::Onbuild(ob) => {
            // BuildKit records the trigger in the config only: ONBUILD adds no history entry.
            c.on_build.get_or_insert_with(Vec::new).push(ob.expression.clone());
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_parser::{CommandLine, KeyValue};

    fn cfg() -> ImageConfig {
        ImageConfig::scratch(&forge_oci::Platform::host())
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let mut c = cfg();
        c.config.cmd = Some(vec!["inherited".into()]);
        let mut set = false;
        apply_metadata(&mut c, &InstructionKind::Entrypoint(CommandLine { form: CmdForm::Exec(vec!["/app".into()]) }), &mut set);
        assert_eq!(c.config.cmd, None);
        apply_metadata(&mut c, &InstructionKind::Cmd(CommandLine { form: CmdForm::Shell("run it".into()) }), &mut set);
        apply_metadata(&mut c, &InstructionKind::Entrypoint(CommandLine { form: CmdForm::Exec(vec!["/b".into()]) }), &mut set);
        assert_eq!(c.config.cmd, Some(vec!["/bin/sh".into(), "-c".into(), "run it".into()]));
        assert_eq!(c.config.args_escaped, Some(true), "CMD sets ArgsEscaped, as BuildKit does");
    }

    #[test]
    fn env_replaces_in_place_and_labels_merge() {
        let mut c = cfg();
        let mut set = false;
        let kv = |k: &str, v: &str| KeyValue { key: k.into(), value: v.into() };
        apply_metadata(&mut c, &InstructionKind::Env(vec![kv("A", "1"), kv("B", "2")]), &mut set);
        apply_metadata(&mut c, &InstructionKind::Env(vec![kv("A", "3")]), &mut set);
        assert_eq!(c.config.env, Some(vec!["A=3".into(), "B=2".into()]));
        apply_metadata(&mut c, &InstructionKind::Label(vec![kv("x", "1")]), &mut set);
        apply_metadata(&mut c, &InstructionKind::Label(vec![kv("y", "2")]), &mut set);
        assert_eq!(c.config.labels.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn workdirs_chain_and_clean() {
        assert_eq!(join_workdir("/a", "b"), "/a/b");
        assert_eq!(join_workdir("/a", "/c/./d/../e"), "/c/e");
        assert_eq!(join_workdir("", "x"), "/x");
    }

    #[test]
    fn history_texts_match_go_formatting() {
        let mut c = cfg();
        let mut set = false;
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(apply_metadata(&mut c, &InstructionKind::Volume(v(&["/data", "/logs"])), &mut set).unwrap(), "VOLUME [/data /logs]");
        assert_eq!(apply_metadata(&mut c, &InstructionKind::Shell(v(&["/bin/sh", "-ec"])), &mut set).unwrap(), "SHELL [/bin/sh -ec]");
        let e = apply_metadata(&mut c, &InstructionKind::Expose(v(&["8080", "53/UDP", "7-8"])), &mut set).unwrap();
        assert_eq!(e, "EXPOSE [8080/tcp 53/udp 7/tcp 8/tcp]");
        let e = apply_metadata(&mut c, &InstructionKind::Expose(v(&["80"])), &mut set).unwrap();
        assert_eq!(e, "EXPOSE [80/tcp]", "history lists this instruction's ports only");
        assert_eq!(c.config.exposed_ports.as_ref().unwrap().len(), 5);
        let hc = Healthcheck::Check {
            test: v(&["CMD-SHELL", "true"]),
            interval: Some(30_000_000_000),
            timeout: None,
            start_period: Some(90_000_000_000),
            start_interval: None,
            retries: Some(3),
        };
        assert_eq!(
            apply_metadata(&mut c, &InstructionKind::Healthcheck(hc), &mut set).unwrap(),
            "HEALTHCHECK {Test:[CMD-SHELL true] Interval:30s Timeout:0s StartPeriod:1m30s StartInterval:0s Retries:3}"
        );
        assert_eq!(
            apply_metadata(&mut c, &InstructionKind::Healthcheck(Healthcheck::None), &mut set).unwrap(),
            "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}"
        );
    }

    #[test]
    fn copy_history_keeps_buildkit_flags_only() {
        use forge_parser::{Copy, CopyCommon, Heredoc};
        let common = CopyCommon {
            sources: vec!["a".into(), "b/".into()],
            dest: "/dst/".into(),
            chown: Some("app:app".into()),
            chmod: Some("0755".into()),
            link: true,
            exclude: vec!["*.md".into()],
            heredocs: vec![],
        };
        let c = InstructionKind::Copy(Copy { common: common.clone(), from: Some("build".into()), parents: true });
        assert_eq!(copy_history(&c).unwrap(), "COPY --parents --chown=app:app --chmod=0755 a b/ /dst/");
        let h = Heredoc { name: "EOF".into(), content: "x\n".into(), expand: true, chomp: false };
        let c = InstructionKind::Copy(Copy {
            common: CopyCommon { sources: vec![], heredocs: vec![h], chown: None, chmod: None, ..common },
            from: None,
            parents: false,
        });
        assert_eq!(copy_history(&c).unwrap(), "COPY <<EOF /dst/");
        assert_eq!(copy_history(&InstructionKind::User("x".into())), None);
    }

    #[test]
    fn go_durations() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (10, "10ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_250_000_000, "1h1m1.25s"),
            (-2_000_000_000, "-2s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(*ns), *want, "{ns}ns");
        }
    }

    #[test]
    fn expose_specs() {
        assert_eq!(expose_keys("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_keys("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_keys("8000-8002").unwrap().len(), 3);
        assert!(expose_keys("80/xyz").is_err());
        assert!(expose_keys("abc").is_err());
    }
}
