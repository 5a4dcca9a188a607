//! RUN features end to end: mounts (cache, secret, bind, tmpfs), networking, heredocs, the
//! config instructions a RUN sees, and how a failing RUN is reported.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn cache_mount_persists_across_builds() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log > /count.txt\n",
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(read(&fs, "count.txt").trim(), "1");
    assert!(
        !fs.join("cache/log").exists(),
        "the cache mount's content leaked into the image"
    );
    let (b, fs) = build_rootfs(&f, ctx.path(), &["--no-cache"]);
    assert_eq!(b.progress.ran().len(), 1);
    assert_eq!(
        read(&fs, "count.txt").trim(),
        "2",
        "the cache mount did not keep its content"
    );
    // Another store has its own cache mounts.
    let g = Forge::with_base().unwrap();
    let (_, fs) = build_rootfs(&g, ctx.path(), &[]);
    assert_eq!(read(&fs, "count.txt").trim(), "1");
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            files_under(&p, out);
        } else if ft.is_file() {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The file's bytes, and also its decompressed bytes if it is gzip or zstd (layer blobs).
fn readable_forms(p: &Path) -> Vec<Vec<u8>> {
    let raw = std::fs::read(p).unwrap_or_default();
    let mut forms = Vec::new();
    let decomp = |prog: &str| {
        Command::new(prog)
            .arg("-dc")
            .arg(p)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
    };
    if raw.starts_with(&[0x1f, 0x8b]) {
        forms.push(decomp("gzip").unwrap_or_else(|| panic!("cannot gunzip {}", p.display())));
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        forms.push(decomp("zstd").unwrap_or_else(|| panic!("cannot unzstd {}", p.display())));
    }
    forms.push(raw);
    forms
}

#[test]
fn secret_mount_is_readable_and_leaves_no_trace() {
    let Some(f) = Forge::with_base() else { return };
    let Some(_) = tool("gzip") else { return };
    let Some(sha) = tool("sha256sum") else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("forge-e2e-secret-{nanos:x}-{}", std::process::id());
    let secret_file = f.scratch("secret.txt");
    std::fs::write(&secret_file, &secret).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /secret.sha && test -f /run/secrets/tok\nRUN --mount=type=secret,id=tok,target=/etc/other cat /etc/other | wc -c > /secret.len\n",
    )]);
    let meta = f.scratch("meta.json");
    let oci = f.scratch("out-oci");
    let tar = f.scratch("out.tar");
    let dest = f.scratch("out-local");
    let args: Vec<String> = vec![
        "--secret".into(),
        format!("id=tok,src={}", secret_file.display()),
        "--metadata-file".into(),
        meta.display().to_string(),
        "-t".into(),
        "sec:1".into(),
        "-o".into(),
        format!("type=oci,dest={},tar=false", oci.display()),
        "-o".into(),
        format!("type=tar,dest={}", tar.display()),
        "-o".into(),
        format!("type=local,dest={}", dest.display()),
        "-o".into(),
        "type=image,name=sec:2".into(),
    ];
    let b = f.build(ctx.path(), &args);
    let want = run_cmd(Command::new(&sha).arg(&secret_file))
        .ok()
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        read(&dest, "secret.sha").trim(),
        want,
        "the RUN did not read the secret's bytes"
    );
    assert_eq!(
        read(&dest, "secret.len").trim(),
        secret.len().to_string(),
        "a secret with target= was not readable"
    );
    assert!(
        !dest.join("run/secrets/tok").is_file() && !dest.join("etc/other").is_file(),
        "the secret file stayed in the image"
    );
    assert!(
        !b.out.stderr.contains(&secret) && !b.out.stdout.contains(&secret),
        "the secret was printed"
    );
    // Also run the image so its snapshots are unpacked in the store, then search everything.
    f.ok(&["run", "--rm", "sec:1", "true"]);
    let mut all = Vec::new();
    files_under(&f.root(), &mut all);
    files_under(&oci, &mut all);
    files_under(&dest, &mut all);
    all.push(tar.clone());
    all.push(meta.clone());
    assert!(all.len() > 10, "too few files to search: {all:?}");
    for p in &all {
        for form in readable_forms(p) {
            assert!(
                !contains(&form, secret.as_bytes()),
                "the secret's bytes are in {}",
                p.display()
            );
        }
    }
    // The search itself works: the same walk finds a marker placed in a layer.
    let marker_ctx = context(&[
        ("Dockerfile", "FROM busybox:local\nCOPY m.txt /m.txt\n"),
        ("m.txt", &format!("marker-{secret}")),
    ]);
    f.build(marker_ctx.path(), &["-t", "marker:1"]);
    let mut all = Vec::new();
    files_under(&f.root(), &mut all);
    assert!(
        all.iter().any(|p| readable_forms(p)
            .iter()
            .any(|form| contains(form, secret.as_bytes()))),
        "the store search cannot see layer content"
    );
}

#[test]
fn missing_secret_fails_unless_optional() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("Dockerfile", "FROM busybox:local\nRUN --mount=type=secret,id=absent,required=true cat /run/secrets/absent\n")]);
    let b = f.try_build(ctx.path(), &[] as &[&str]);
    assert_eq!(b.out.code, 1, "{}", b.out.stderr);
    assert!(b.out.stderr.contains("absent"), "{}", b.out.stderr);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n",
    )]);
    f.build(ctx.path(), &[] as &[&str]);
}

#[test]
fn bind_mounts_from_context_and_stage() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[
        (
            "Dockerfile",
            r#"FROM busybox:local AS builder
RUN mkdir /out && echo from-stage > /out/x.txt

FROM busybox:local
RUN --mount=type=bind,source=data,target=/mnt/ctx cat /mnt/ctx/a.txt > /from-ctx.txt
RUN --mount=type=bind,from=builder,source=/out,target=/mnt/stage cat /mnt/stage/x.txt > /from-stage.txt
RUN --mount=type=bind,source=data,target=/mnt/rw,rw echo scribble > /mnt/rw/a.txt && cat /mnt/rw/a.txt > /rw.txt
"#,
        ),
        ("data/a.txt", "from-context\n"),
    ]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(read(&fs, "from-ctx.txt"), "from-context\n");
    assert_eq!(read(&fs, "from-stage.txt"), "from-stage\n");
    assert_eq!(read(&fs, "rw.txt"), "scribble\n");
    assert!(
        !fs.join("mnt/ctx/a.txt").exists() && !fs.join("mnt/stage/x.txt").exists(),
        "bind-mounted files leaked into the image"
    );
    assert_eq!(
        read(ctx.path(), "data/a.txt"),
        "from-context\n",
        "a rw bind mount wrote through to the context"
    );
    // A change to the bound file reruns the RUN that binds it.
    write_files(ctx.path(), &[("data/a.txt", "changed\n")]);
    let (b, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert!(
        b.progress.step("cat /mnt/ctx/a.txt").ran(),
        "bind source change did not rerun:\n{}",
        b.out.stderr
    );
    assert_eq!(read(&fs, "from-ctx.txt"), "changed\n");
}

#[test]
fn tmpfs_mount() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN mkdir -p /scratch && echo keep > /scratch/keep\nRUN --mount=type=tmpfs,target=/scratch grep ' /scratch tmpfs ' /proc/mounts > /mounts.txt && ls -A /scratch > /listing.txt && echo temp > /scratch/temp\n",
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert!(read(&fs, "mounts.txt").contains("tmpfs"));
    assert_eq!(
        read(&fs, "listing.txt"),
        "",
        "a tmpfs mount starts empty (it hides the image's files)"
    );
    assert!(
        !fs.join("scratch/temp").exists(),
        "tmpfs content leaked into the image"
    );
    assert_eq!(
        read(&fs, "scratch/keep"),
        "keep\n",
        "the files under the tmpfs mount point were lost"
    );
}

fn interfaces(net_dev: &str) -> Vec<String> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn network_none_sees_only_loopback() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --network=none cat /proc/net/dev > /none.txt\nRUN cat /proc/net/dev > /default.txt\n",
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(
        interfaces(&read(&fs, "none.txt")),
        ["lo"],
        "RUN --network=none"
    );
    // --network none on the command line applies to every RUN.
    let (_, fs) = build_rootfs(&f, ctx.path(), &["--network", "none", "--no-cache"]);
    assert_eq!(
        interfaces(&read(&fs, "default.txt")),
        ["lo"],
        "forge build --network none"
    );
    // With host networking the host's interfaces are visible (the check above can fail).
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    if interfaces(&host).len() > 1 {
        let (_, fs) = build_rootfs(&f, ctx.path(), &["--network", "host", "--no-cache"]);
        assert!(
            interfaces(&read(&fs, "default.txt")).len() > 1,
            "--network host shows only lo"
        );
    }
}

#[test]
fn heredocs_in_run_and_copy() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN <<EOF\necho line1 > /heredoc.txt\necho line2 >> /heredoc.txt\nEOF\nCOPY <<EOF /etc/greeting\nhello from a heredoc\nsecond line\nEOF\nRUN <<'EOT' sh\necho \"shell=$0\" > /interp.txt\nEOT\nRUN <<EOT cat > /copied.txt\nnot a command\nEOT\nCOPY <<A <<B /multi/\naaa\nA\nbee\nB\n",
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(read(&fs, "heredoc.txt"), "line1\nline2\n");
    assert_eq!(
        read(&fs, "etc/greeting"),
        "hello from a heredoc\nsecond line\n"
    );
    // A heredoc with a command after it is that command's stdin (quoted: no expansion by
    // the outer shell, so $0 is the inner sh).
    assert_eq!(read(&fs, "interp.txt"), "shell=sh\n");
    assert_eq!(read(&fs, "copied.txt"), "not a command\n");
    // Several heredoc sources: each file is named after its delimiter.
    assert_eq!(read(&fs, "multi/A"), "aaa\n");
    assert_eq!(read(&fs, "multi/B"), "bee\n");
}

#[test]
fn user_workdir_env_shell_apply_to_run() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        r#"FROM busybox:local
ENV GREETING=hi
ENV OTHER=${GREETING}-there SAME=${GREETING}x GREETING=changed
ENV GREETING=hi
WORKDIR /work
WORKDIR sub
USER app
RUN id -u > /tmp/uid && id -g > /tmp/gid && pwd > /tmp/pwd && echo "$GREETING $OTHER" > /tmp/env
USER root
SHELL ["/bin/env", "FROM_SHELL=yes", "/bin/sh", "-c"]
RUN echo "$FROM_SHELL" > /shell.txt && id -u > /root-uid.txt
"#,
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &["-t", "cfg:1"]);
    assert_eq!(read(&fs, "tmp/uid").trim(), "1000");
    assert_eq!(read(&fs, "tmp/gid").trim(), "1000");
    assert_eq!(read(&fs, "tmp/pwd").trim(), "/work/sub");
    assert_eq!(read(&fs, "tmp/env").trim(), "hi hi-there");
    assert_eq!(
        read(&fs, "shell.txt").trim(),
        "yes",
        "SHELL was not used for RUN"
    );
    assert_eq!(read(&fs, "root-uid.txt").trim(), "0");
    assert!(fs.join("work/sub").is_dir());
    let cfg = &f.inspect("cfg:1")["Config"]["config"];
    assert_eq!(cfg["WorkingDir"], "/work/sub");
    assert_eq!(cfg["User"], "root");
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"GREETING=hi") && env.contains(&"OTHER=hi-there"),
        "{env:?}"
    );
    // Within one ENV, references see the values from before the instruction (as in Docker).
    assert!(env.contains(&"SAME=hix"), "{env:?}");
    assert_eq!(
        cfg["Shell"],
        serde_json::json!(["/bin/env", "FROM_SHELL=yes", "/bin/sh", "-c"])
    );
}

#[test]
fn failing_run_names_the_step_line_and_last_output() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN echo fine\nRUN echo first-line && echo second-line >&2 && exit 3\nRUN echo never-runs\n",
    )]);
    let b = f.try_build(ctx.path(), &[] as &[&str]);
    assert_eq!(b.out.code, 1, "{}", b.out.stderr);
    let err = &b.out.stderr;
    assert!(
        err.contains("RUN echo first-line && echo second-line >&2 && exit 3"),
        "the step is not named:\n{err}"
    );
    assert!(err.contains(":3"), "line 3 is not named:\n{err}");
    assert!(
        err.contains("3")
            && (err.contains("code 3") || err.contains("exit status 3") || err.contains("code: 3")),
        "the exit status is not named:\n{err}"
    );
    let tail = err.rsplit("last output").next().unwrap_or("");
    assert!(
        tail.contains("first-line") && tail.contains("second-line"),
        "the last output lines are missing:\n{err}"
    );
    assert!(
        !b.progress.has_step("never-runs"),
        "a step after the failure started:\n{err}"
    );
    assert!(b.progress.step("echo first-line").error.is_some());
}

#[test]
fn secret_from_environment_and_as_env_var() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=secret,id=api wc -c < /run/secrets/api > /len.txt\nRUN --mount=type=secret,id=api,env=API_TOKEN test \"${#API_TOKEN}\" -gt 0 && echo ${#API_TOKEN} > /envlen.txt\n",
    )]);
    let dest = f.scratch("env-secret");
    let b = f.build_env(
        ctx.path(),
        &[
            "--secret",
            "id=api,env=FORGE_E2E_TOKEN",
            "-o",
            &format!("type=local,dest={}", dest.display()),
        ],
        &[("FORGE_E2E_TOKEN", "0123456789abcdef")],
    );
    assert!(!b.out.stderr.contains("0123456789abcdef"));
    assert_eq!(read(&dest, "len.txt").trim(), "16");
    assert_eq!(
        read(&dest, "envlen.txt").trim(),
        "16",
        "a secret mounted with env= was not in the environment"
    );
}

#[test]
fn ssh_mount_exposes_the_agent_socket() {
    let Some(f) = Forge::with_base() else { return };
    let sock = f.scratch("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh.txt\n",
    )]);
    let (_, fs) = build_rootfs(
        &f,
        ctx.path(),
        &["--ssh", &format!("default={}", sock.display())],
    );
    let inside = read(&fs, "ssh.txt");
    assert!(!inside.trim().is_empty());
    assert!(
        !fs.join(inside.trim().trim_start_matches('/')).exists(),
        "the agent socket stayed in the image"
    );
    // Without --ssh the RUN still runs (the mount is optional by default, as in BuildKit) but
    // sees no socket; with required=true forge refuses.
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=ssh echo \"sock=[$SSH_AUTH_SOCK]\" > /ssh.txt\n",
    )]);
    let (_, fs) = build_rootfs(&f, ctx.path(), &[]);
    assert_eq!(read(&fs, "ssh.txt"), "sock=[]\n");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nRUN --mount=type=ssh,required=true true\n",
    )]);
    let b = f.try_build(ctx.path(), &[] as &[&str]);
    assert_eq!(b.out.code, 1, "{}", b.out.stderr);
    assert!(b.out.stderr.contains("required"), "{}", b.out.stderr);
}
