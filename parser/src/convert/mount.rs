//! `RUN --mount=…` values, as BuildKit's `runmount` parses them.

use crate::instructions::{CacheSharing, MountKind, MountSpec};

use super::suggest::closest;
use super::values::parse_ram_bytes;

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];
const TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];

/// Splits a CSV record: commas separate fields; a field may be double-quoted (`""` is a quote).
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = value.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            '"' if at_start => quoted = true,
            c => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(format!(
            "invalid mount {}: unterminated quote",
            crate::ast::go_quote(value)
        ));
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "invalid value for {key}: {}",
            crate::ast::go_quote(v)
        )),
    }
}

fn kind_name(k: MountKind) -> &'static str {
    match k {
        MountKind::Bind => "bind",
        MountKind::Cache => "cache",
        MountKind::Tmpfs => "tmpfs",
        MountKind::Secret => "secret",
        MountKind::Ssh => "ssh",
    }
}

/// Parses one `--mount` value. With `lenient`, values holding `$` (to be expanded later) are not
/// validated and leave their field unset. `ssh_index` numbers ssh mounts for their default target.
pub fn parse_mount(
    value: &str,
    lenient: bool,
    ssh_index: usize,
) -> Result<MountSpec, (String, Option<String>)> {
    let mut m = MountSpec {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
    };
    let mut ro_auto = true;
    let mut sharing_set = false;
    let plain = |s: String| (s, None);
    for field in csv_fields(value).map_err(plain)? {
        if field.is_empty() {
            continue;
        }
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(plain(format!(
                        "unexpected key 'required' for mount type '{}'",
                        kind_name(m.kind)
                    )))
                }
                _ => {
                    return Err(plain(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )))
                }
            }
            continue;
        };
        let deferred = lenient && val.contains('$');
        match key.as_str() {
            "type" => {
                if deferred {
                    continue;
                }
                m.kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    _ => {
                        let help = closest(&val, TYPES.iter().copied())
                            .map(|s| format!("did you mean type={s}?"));
                        return Err((
                            format!("unsupported mount type {}", crate::ast::go_quote(&val)),
                            help,
                        ));
                    }
                }
            }
            "from" => m.from = Some(val),
            "source" | "src" => m.source = Some(val),
            "target" | "dst" | "destination" => m.target = Some(val),
            "readonly" | "ro" => {
                ro_auto = false;
                if !deferred {
                    m.readonly = parse_bool(&key, &val).map_err(plain)?;
                }
            }
            "readwrite" | "rw" => {
                ro_auto = false;
                if !deferred {
                    m.readonly = !parse_bool(&key, &val).map_err(plain)?;
                }
            }
            "required" => {
                if !matches!(m.kind, MountKind::Secret | MountKind::Ssh) {
                    return Err(plain(format!(
                        "unexpected key 'required' for mount type '{}'",
                        kind_name(m.kind)
                    )));
                }
                if !deferred {
                    m.required = parse_bool(&key, &val).map_err(plain)?;
                }
            }
            "sharing" => {
                if m.kind != MountKind::Cache {
                    return Err(plain(format!(
                        "invalid cache sharing set for {} mount",
                        kind_name(m.kind)
                    )));
                }
                sharing_set = true;
                if deferred {
                    continue;
                }
                m.sharing = match val.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        let help = closest(&val, ["shared", "private", "locked"])
                            .map(|s| format!("did you mean sharing={s}?"));
                        return Err((
                            format!("unsupported sharing value {}", crate::ast::go_quote(&val)),
                            help,
                        ));
                    }
                }
            }
            "id" => m.id = Some(val),
            "size" => {
                if m.kind != MountKind::Tmpfs {
                    return Err(plain(
                        "size parameter is only supported for tmpfs mounts".to_string(),
                    ));
                }
                if !deferred {
                    m.size = Some(parse_ram_bytes(&val).map_err(plain)?);
                }
            }
            "mode" => {
                if !deferred {
                    m.mode = Some(u32::from_str_radix(&val, 8).map_err(|_| {
                        plain(format!(
                            "invalid mode {}: must be an octal number",
                            crate::ast::go_quote(&val)
                        ))
                    })?);
                }
            }
            "uid" | "gid" => {
                if !deferred {
                    let n = val.parse::<u32>().map_err(|_| {
                        plain(format!(
                            "invalid {key} {}: must be a number",
                            crate::ast::go_quote(&val)
                        ))
                    })?;
                    if key == "uid" {
                        m.uid = Some(n);
                    } else {
                        m.gid = Some(n);
                    }
                }
            }
            "env" => {
                if m.kind != MountKind::Secret {
                    return Err(plain(format!(
                        "unexpected key 'env' for mount type '{}'",
                        kind_name(m.kind)
                    )));
                }
                m.env = Some(val);
            }
            _ => {
                let help =
                    closest(&key, KEYS.iter().copied()).map(|s| format!("did you mean {s}?"));
                return Err((format!("unexpected key '{key}' in '{field}'"), help));
            }
        }
    }

    if m.kind == MountKind::Tmpfs && (m.mode.is_some() || m.uid.is_some() || m.gid.is_some()) {
        return Err(plain(
            "mode/uid/gid not allowed for tmpfs mounts".to_string(),
        ));
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountKind::Cache | MountKind::Tmpfs);
    }
    if sharing_set && m.kind != MountKind::Cache {
        return Err(plain(format!(
            "invalid cache sharing set for {} mount",
            kind_name(m.kind)
        )));
    }
    match m.kind {
        MountKind::Secret => {
            if m.from.is_some() {
                return Err(plain("secret mount should not have a from".to_string()));
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(plain("both source and id can't be set".to_string()));
            }
            if m.id.is_none() {
                m.id = m.source.take();
            }
            if m.id.is_none() {
                m.id = m.target.as_deref().map(|t| base_name(t).to_string());
            }
            let Some(id) = m.id.clone().filter(|s| !s.is_empty()) else {
                return Err(plain(
                    "secret mount requires an id, source or target".to_string(),
                ));
            };
            if m.target.is_none() && m.env.is_none() {
                m.target = Some(format!("/run/secrets/{}", base_name(&id)));
            }
            m.mode.get_or_insert(0o400);
        }
        MountKind::Ssh => {
            if m.from.is_some() {
                return Err(plain("ssh mount should not have a from".to_string()));
            }
            m.id.get_or_insert_with(|| "default".to_string());
            m.target
                .get_or_insert_with(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
            m.mode.get_or_insert(0o600);
        }
        MountKind::Cache | MountKind::Bind | MountKind::Tmpfs => {
            if m.target.as_deref().unwrap_or("").is_empty() && !(lenient && value.contains('$')) {
                return Err((
                    format!("{} mount requires a target", kind_name(m.kind)),
                    Some("add target=<path in the container>".to_string()),
                ));
            }
            if m.kind == MountKind::Cache && m.id.is_none() {
                m.id = m.target.clone();
            }
        }
    }
    Ok(m)
}

fn base_name(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    t.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: &str) -> String {
        parse_mount(v, false, 0).unwrap_err().0
    }

    #[test]
    fn defaults() {
        let m = parse_mount("type=cache,target=/root/.cache", false, 0).unwrap();
        assert_eq!(
            (m.kind, m.readonly, m.id.as_deref(), m.sharing),
            (
                MountKind::Cache,
                false,
                Some("/root/.cache"),
                CacheSharing::Shared
            )
        );
        let b = parse_mount("target=/src,from=build,source=/out", false, 0).unwrap();
        assert_eq!(
            (b.kind, b.readonly, b.from.as_deref()),
            (MountKind::Bind, true, Some("build"))
        );
        let s = parse_mount("type=secret,id=npmrc", false, 0).unwrap();
        assert_eq!(
            (s.target.as_deref(), s.mode),
            (Some("/run/secrets/npmrc"), Some(0o400))
        );
        let e = parse_mount("type=secret,id=tok,env=TOKEN,required", false, 0).unwrap();
        assert_eq!(
            (e.target, e.env.as_deref(), e.required),
            (None, Some("TOKEN"), true)
        );
        let h = parse_mount("type=ssh", false, 2).unwrap();
        assert_eq!(
            (h.id.as_deref(), h.target.as_deref()),
            (Some("default"), Some("/run/buildkit/ssh_agent.2"))
        );
        let t = parse_mount("type=tmpfs,target=/tmp,size=64m,rw", false, 0).unwrap();
        assert_eq!(t.size, Some(64 << 20));
        let q = parse_mount("type=bind,\"target=/a,b\",ro=false", false, 0).unwrap();
        assert_eq!((q.target.as_deref(), q.readonly), (Some("/a,b"), false));
        let c = parse_mount(
            "type=cache,target=/c,sharing=locked,mode=0755,uid=1000",
            false,
            0,
        )
        .unwrap();
        assert_eq!(
            (c.sharing, c.mode, c.uid),
            (CacheSharing::Locked, Some(0o755), Some(1000))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("type=cahce,target=/x"),
            "unsupported mount type \"cahce\""
        );
        assert_eq!(
            parse_mount("type=cahce", false, 0)
                .unwrap_err()
                .1
                .as_deref(),
            Some("did you mean type=cache?")
        );
        assert_eq!(
            err("type=cache,taget=/x"),
            "unexpected key 'taget' in 'taget=/x'"
        );
        assert_eq!(
            err("type=bind,sharing=locked,target=/x"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            err("type=cache,target=/x,sharing=bogus"),
            "unsupported sharing value \"bogus\""
        );
        assert_eq!(
            err("type=bind,target=/x,size=1m"),
            "size parameter is only supported for tmpfs mounts"
        );
        assert_eq!(err("type=cache"), "cache mount requires a target");
        assert_eq!(
            err("type=secret,id=a,from=x"),
            "secret mount should not have a from"
        );
        assert_eq!(
            err("type=cache,target=/x,mode=99"),
            "invalid mode \"99\": must be an octal number"
        );
        assert_eq!(
            err("type=cache,target=/x,uid=me"),
            "invalid uid \"me\": must be a number"
        );
        assert_eq!(
            err("target=/x,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            err("target=/x,bogus"),
            "invalid field 'bogus' must be a key=value pair"
        );
        assert!(parse_mount("type=cache,target=$DIR,uid=$UID", true, 0).is_ok());
    }
}
