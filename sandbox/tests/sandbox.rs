//! Integration tests: the real sandbox, as root, on a busybox rootfs built in a temp dir.
//!
//! `harness = false`: this binary is also the sandbox helper, so `main` calls
//! `maybe_run_helper()` before anything else, then runs the cases and prints
//! `N passed, N failed`. Pass a substring to run only matching cases.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use forge_sandbox::{
    CancelToken, ExitStatus, Mount, MountKind, Network, OutputStream, Rootfs, RunSpec, Sandbox,
    SandboxError,
};

type CaseResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!(
                "{} != {}\n  left: {:?}\n right: {:?}",
                stringify!($left),
                stringify!($right),
                l,
                r
            ));
        }
    }};
}

/// The shared busybox image (one read-only lower layer).
struct Image {
    _dir: tempfile::TempDir,
    lower: PathBuf,
}

impl Image {
    fn build() -> Image {
        let dir = tempfile::Builder::new()
            .prefix("forge-sandbox-image")
            .tempdir()
            .expect("tempdir");
        let lower = dir.path().join("lower");
        for d in ["bin", "etc", "root", "home/tester", "data/sub", "tmp"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::set_permissions(lower.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::copy("/usr/bin/busybox", lower.join("bin/busybox")).expect("copy busybox");
        let list = std::process::Command::new("/usr/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet));
            }
        }
        std::fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:Tester:/home/tester:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            lower.join("etc/group"),
            "root:x:0:\ntester:x:1000:\nextra:x:2000:tester\nmore:x:2001:other,tester\n",
        )
        .unwrap();
        std::fs::write(lower.join("etc/removeme"), "bye").unwrap();
        std::fs::write(lower.join("data/sub/file"), "old").unwrap();
        std::os::unix::fs::chown(lower.join("home/tester"), Some(1000), Some(1000)).unwrap();
        Image { _dir: dir, lower }
    }
}

/// A fresh upper/work pair over the image.
struct Snapshot {
    dir: tempfile::TempDir,
    rootfs: Rootfs,
}

impl Snapshot {
    fn new(image: &Image) -> Snapshot {
        let dir = tempfile::Builder::new()
            .prefix("forge-sandbox-snap")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("upper")).unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let rootfs = Rootfs::Overlay {
            lower: vec![image.lower.clone()],
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
        };
        Snapshot { dir, rootfs }
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn spec(&self, script: &str) -> RunSpec {
        RunSpec::new(self.rootfs.clone(), sh(script))
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(spec: &RunSpec) -> Result<Output, SandboxError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = Sandbox::new().run(
        spec,
        &mut |stream, bytes| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(bytes),
            OutputStream::Stderr => stderr.extend_from_slice(bytes),
        },
        &CancelToken::new(),
    )?;
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Runs and requires success; returns stdout.
fn run_ok(spec: &RunSpec) -> Result<String, String> {
    let out = run(spec).map_err(|e| format!("run failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "command failed with {}\nstdout: {}\nstderr: {}",
            out.status, out.stdout, out.stderr
        ));
    }
    Ok(out.stdout)
}

/// Every path in a tree, relative to it.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------

fn proc_and_pid1(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let out = run_ok(&snap.spec(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; echo self=$$; ps -o pid,args | tail -n +2 | wc -l",
    ))?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines[0].starts_with("forge-sandbox __forge-sandbox"),
        "pid 1 is not the sandbox init: {out}"
    );
    ensure_eq!(lines[1], "self=2");
    // init, sh, ps, tail, wc: nothing from the host.
    let count: usize = lines[2].trim().parse().map_err(|_| out.clone())?;
    ensure!(count <= 5, "ps sees {count} processes:\n{out}");
    Ok(())
}

fn hostname_isolated(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    // Renaming needs CAP_SYS_ADMIN, which RUN does not have (as under Docker).
    let mut spec = snap.spec("hostname; cat /etc/hostname; grep -c forge-test-host /etc/hosts; hostname renamed 2>/dev/null || echo denied");
    spec.hostname = "forge-test-host".into();
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = run_ok(&spec)?;
    ensure_eq!(out, "forge-test-host\nforge-test-host\n1\ndenied\n");
    ensure_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_before
    );
    Ok(())
}

fn host_paths_invisible(image: &Image) -> CaseResult {
    let marker = std::env::temp_dir().join(format!("forge-host-marker-{}", std::process::id()));
    std::fs::write(&marker, "host secret").unwrap();
    let snap = Snapshot::new(image);
    let script = format!(
        "test -e {m} && echo VISIBLE; ls /; find / -xdev -name 'forge-host-marker-*' 2>/dev/null | head -1; echo done",
        m = marker.display()
    );
    let out = run_ok(&snap.spec(&script));
    let _ = std::fs::remove_file(&marker);
    let out = out?;
    ensure!(!out.contains("VISIBLE"), "host marker reachable: {out}");
    ensure!(
        !out.contains("forge-host-marker"),
        "host marker found: {out}"
    );
    let names: BTreeSet<&str> = out.lines().filter(|l| *l != "done").collect();
    let want: BTreeSet<&str> = [
        "bin", "data", "dev", "etc", "home", "proc", "root", "sys", "tmp",
    ]
    .into();
    ensure_eq!(names, want);
    Ok(())
}

fn whiteout_and_opaque(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    run_ok(&snap.spec("rm /etc/removeme && rm -rf /data && mkdir /data && echo new > /data/new"))?;
    let up = snap.upper();
    let wh = std::fs::symlink_metadata(up.join("etc/removeme")).map_err(|e| e.to_string())?;
    ensure!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "etc/removeme is not a 0:0 whiteout"
    );
    let mut buf = [0u8; 8];
    let path = std::ffi::CString::new(up.join("data").as_os_str().as_encoded_bytes()).unwrap();
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    ensure!(
        n == 1 && buf[0] == b'y',
        "data is not opaque (xattr len {n})"
    );
    ensure_eq!(
        tree(&up),
        BTreeSet::from(["data", "data/new", "etc", "etc/removeme"].map(String::from))
    );
    Ok(())
}

fn user_switching(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let cases = [
        (
            Some("tester"),
            "uid=1000(tester) gid=1000(tester) groups=1000(tester),2000(extra),2001(more)",
        ),
        (
            Some("1000"),
            "uid=1000(tester) gid=1000(tester) groups=1000(tester),2000(extra),2001(more)",
        ),
        (Some("1234"), "uid=1234 gid=0(root) groups=0(root)"),
        (Some("1234:5678"), "uid=1234 gid=5678 groups=5678"),
        (
            Some("tester:extra"),
            "uid=1000(tester) gid=2000(extra) groups=2000(extra)",
        ),
        (Some("tester:77"), "uid=1000(tester) gid=77 groups=77"),
        (None, "uid=0(root) gid=0(root) groups=0(root)"),
    ];
    for (user, want) in cases {
        let mut spec = snap.spec("id");
        spec.user = user.map(String::from);
        let out = run_ok(&spec)?;
        ensure!(
            out.trim() == want,
            "USER {user:?}: got {out:?}, want {want:?}"
        );
    }
    let mut spec = snap.spec("id");
    spec.user = Some("nobody-here".into());
    match run(&spec) {
        Err(SandboxError::User { user, reason }) => {
            ensure_eq!(user, "nobody-here");
            ensure!(reason.contains("unable to find user"), "{reason}");
        }
        other => return Err(format!("unknown user: {:?}", other.map(|o| o.status))),
    }
    Ok(())
}

fn workdir_created(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let mut spec = snap.spec("pwd; stat -c '%u:%g %a' /work /work/deep/dir");
    spec.cwd = "/work/deep/dir".into();
    spec.user = Some("tester".into());
    let out = run_ok(&spec)?;
    ensure_eq!(out, "/work/deep/dir\n1000:1000 755\n1000:1000 755\n");
    let meta = std::fs::metadata(snap.upper().join("work/deep/dir")).map_err(|e| e.to_string())?;
    ensure_eq!((meta.uid(), meta.gid()), (1000, 1000));
    Ok(())
}

fn env_defaults(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let out = run_ok(&snap.spec("echo $PATH; echo $HOME; echo ${FOO:-unset}"))?;
    ensure_eq!(
        out,
        format!("{}\n/root\nunset\n", forge_sandbox::DEFAULT_PATH)
    );
    let mut spec = snap.spec("echo $PATH; echo $HOME; echo $FOO");
    spec.user = Some("tester".into());
    spec.env = vec!["FOO=bar baz".into(), "PATH=/bin".into()];
    ensure_eq!(run_ok(&spec)?, "/bin\n/home/tester\nbar baz\n");
    let mut spec = snap.spec("echo $HOME");
    spec.user = Some("4321".into());
    ensure_eq!(run_ok(&spec)?, "/\n");
    Ok(())
}

fn exit_code_and_signal(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let out = run(&snap.spec("echo before; exit 3")).map_err(|e| e.to_string())?;
    ensure_eq!(
        out.status,
        ExitStatus {
            code: Some(3),
            signal: None
        }
    );
    ensure!(!out.status.success(), "exit 3 is not success");
    let out = run(&snap.spec("kill -KILL $$")).map_err(|e| e.to_string())?;
    ensure_eq!(
        out.status,
        ExitStatus {
            code: None,
            signal: Some(9)
        }
    );
    let out = run(&snap.spec("kill -TERM $$")).map_err(|e| e.to_string())?;
    ensure_eq!(out.status.signal, Some(15));
    match run(&RunSpec::new(
        snap.rootfs.clone(),
        vec!["no-such-program".into()],
    )) {
        Err(SandboxError::Exec { program, reason }) => {
            ensure_eq!(program, "no-such-program");
            ensure!(reason.contains("not found"), "{reason}");
        }
        other => return Err(format!("missing program: {:?}", other.map(|o| o.status))),
    }
    Ok(())
}

fn output_streaming_order(image: &Image) -> CaseResult {
    // The command waits for the caller to acknowledge each line through a bind-mounted host
    // directory, so the interleaving is deterministic and proves output arrives while the
    // command runs.
    let snap = Snapshot::new(image);
    let ack = tempfile::tempdir().unwrap();
    let mut spec = snap.spec(
        "wait_for() { i=0; while [ ! -e /ack/$1 ]; do i=$((i+1)); [ $i -gt 3000 ] && echo TIMEOUT && exit 9; usleep 10000; done; }
         echo out1; wait_for 1; echo err1 >&2; wait_for 2; echo out2; wait_for 3; echo err2 >&2; wait_for 4; seq 1 2000",
    );
    spec.mounts.push(Mount {
        target: "/ack".into(),
        kind: MountKind::Bind {
            source: ack.path().to_path_buf(),
            readonly: true,
        },
    });
    let mut events: Vec<(OutputStream, String)> = Vec::new();
    let mut acked = 0;
    let status = Sandbox::new()
        .run(
            &spec,
            &mut |stream, bytes| {
                let text = String::from_utf8_lossy(bytes).into_owned();
                match events.last_mut() {
                    Some((s, t)) if *s == stream => t.push_str(&text),
                    _ => events.push((stream, text)),
                }
                if acked < 4 {
                    acked += 1;
                    std::fs::write(ack.path().join(acked.to_string()), "").unwrap();
                }
            },
            &CancelToken::new(),
        )
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "status {status}: {events:?}");
    let seq: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    let want = vec![
        (OutputStream::Stdout, "out1\n".to_string()),
        (OutputStream::Stderr, "err1\n".to_string()),
        (OutputStream::Stdout, "out2\n".to_string()),
        (OutputStream::Stderr, "err2\n".to_string()),
        (OutputStream::Stdout, seq),
    ];
    ensure_eq!(events, want);
    Ok(())
}

fn network_none_only_lo(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let mut spec = snap.spec("ls /sys/class/net; ip -o link | cut -d: -f2; ip -o link show lo | grep -c UP; cat /etc/resolv.conf");
    spec.network = Network::None;
    let out = run_ok(&spec)?;
    let mut lines = out.lines();
    ensure_eq!(lines.next(), Some("lo"));
    ensure_eq!(lines.next().map(str::trim), Some("lo"));
    ensure_eq!(lines.next(), Some("1"));
    let resolv: Vec<&str> = lines.collect();
    ensure!(
        !resolv.iter().any(|l| l.starts_with("nameserver 127.")),
        "loopback nameserver kept: {resolv:?}"
    );
    // With the host network, the host's interfaces are there.
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let out = run_ok(&snap.spec("ls /sys/class/net | wc -l"))?;
    ensure_eq!(out.trim().parse::<usize>().unwrap_or(0), host_ifaces);
    Ok(())
}

fn secret_not_in_upper(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let mut spec = snap.spec(
        "cat /run/secrets/token; stat -c '%a %u:%g' /run/secrets/token; echo x > /run/secrets/token && echo WRITABLE; true",
    );
    spec.mounts.push(Mount {
        target: "/run/secrets/token".into(),
        kind: MountKind::SecretFile {
            data: b"s3cr3t\n".to_vec(),
            mode: 0o400,
            uid: 1000,
            gid: 1000,
        },
    });
    let out = run_ok(&spec)?;
    ensure_eq!(out, "s3cr3t\n400 1000:1000\n");
    ensure_eq!(tree(&snap.upper()), BTreeSet::new());
    Ok(())
}

fn bind_readonly_and_tmpfs(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut spec = snap.spec(
        "cat /ro/in; touch /ro/new 2>/dev/null && echo RO-WRITABLE; echo hi > /rw/out; \
         df -k /scratch | tail -1 | awk '{print $2}'; stat -c %a /scratch; echo t > /scratch/f; cat /scratch/f",
    );
    spec.mounts = vec![
        Mount {
            target: "/ro".into(),
            kind: MountKind::Bind {
                source: host.path().into(),
                readonly: true,
            },
        },
        Mount {
            target: "/rw".into(),
            kind: MountKind::Bind {
                source: rw.path().into(),
                readonly: false,
            },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size: Some(1024 * 1024),
            },
        },
    ];
    let out = run_ok(&spec)?;
    ensure_eq!(out, "from host\n1024\n1777\nt\n");
    ensure_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "hi\n"
    );
    ensure!(
        !host.path().join("new").exists(),
        "read-only bind was written"
    );
    ensure_eq!(tree(&snap.upper()), BTreeSet::new());
    Ok(())
}

fn socket_mount(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let host = tempfile::tempdir().unwrap();
    let sock_path = host.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let mut spec = snap.spec("test -S /run/buildkit/ssh_agent.0 && echo socket");
    spec.mounts.push(Mount {
        target: "/run/buildkit/ssh_agent.0".into(),
        kind: MountKind::Socket {
            source: sock_path.clone(),
        },
    });
    let out = run_ok(&spec)?;
    ensure!(
        out.starts_with("socket\n"),
        "no socket at the target: {out}"
    );
    drop(listener);
    ensure_eq!(tree(&snap.upper()), BTreeSet::new());
    Ok(())
}

fn no_etc_files_leak(image: &Image) -> CaseResult {
    // The image has no /etc/hosts, resolv.conf, hostname, /proc, /dev or /sys: all are stubs.
    let snap = Snapshot::new(image);
    let lower_etc = std::fs::metadata(image.lower.join("etc")).unwrap();
    let out = run_ok(&snap.spec("cat /etc/hosts; test -s /etc/resolv.conf && echo resolv"))?;
    ensure!(
        out.contains("127.0.0.1") && out.ends_with("resolv\n"),
        "{out}"
    );
    ensure_eq!(tree(&snap.upper()), BTreeSet::new());
    ensure_eq!(
        std::fs::metadata(image.lower.join("etc")).unwrap().mtime(),
        lower_etc.mtime()
    );

    // An image that ships /etc/hosts keeps its own file in the layer untouched.
    let shipped = tempfile::tempdir().unwrap();
    let layer = shipped.path().join("layer");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(layer.join("etc/hosts"), "10.0.0.1 shipped\n").unwrap();
    std::fs::create_dir(shipped.path().join("upper")).unwrap();
    std::fs::create_dir(shipped.path().join("work")).unwrap();
    let rootfs = Rootfs::Overlay {
        lower: vec![layer.clone(), image.lower.clone()],
        upper: shipped.path().join("upper"),
        work: shipped.path().join("work"),
    };
    let out = run_ok(&RunSpec::new(rootfs, sh("cat /etc/hosts; touch /newfile")))?;
    ensure!(
        out.contains("localhost"),
        "generated hosts not mounted: {out}"
    );
    ensure_eq!(
        std::fs::read_to_string(layer.join("etc/hosts")).unwrap(),
        "10.0.0.1 shipped\n"
    );
    ensure_eq!(
        tree(&shipped.path().join("upper")),
        BTreeSet::from(["newfile".to_string()])
    );
    Ok(())
}

fn rootfs_dir_fallback(image: &Image) -> CaseResult {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let status = std::process::Command::new("cp")
        .args(["-a", image.lower.to_str().unwrap(), root.to_str().unwrap()])
        .status()
        .unwrap();
    ensure!(status.success(), "cp -a failed");
    let before = tree(&root);
    let spec = RunSpec::new(
        Rootfs::Dir(root.clone()),
        sh("echo hi > /hello; cat /etc/hostname"),
    );
    ensure_eq!(run_ok(&spec)?, "forge-sandbox\n");
    let mut after = tree(&root);
    ensure!(after.remove("hello"), "hello missing");
    ensure_eq!(after, before);
    Ok(())
}

fn capabilities_and_insecure(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let script = "grep -E '^Cap(Eff|Bnd)' /proc/self/status; mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; \
                  cat /proc/kcore 2>/dev/null | head -c 1 | wc -c; echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo SYSCTL; \
                  touch /sys/x 2>/dev/null && echo SYSRW; unshare -U true 2>/dev/null && echo USERNS; true";
    let out = run_ok(&snap.spec(&format!("mkdir -p /mnt; {script}")))?;
    ensure_eq!(
        out,
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n0\n"
    );
    let mut spec = snap.spec("grep -E '^(CapEff|Seccomp):' /proc/self/status");
    spec.user = Some("tester".into());
    ensure_eq!(run_ok(&spec)?, "CapEff:\t0000000000000000\nSeccomp:\t2\n");
    let mut spec = snap.spec(&format!("mkdir -p /mnt; {script}"));
    spec.insecure = true;
    let out = run_ok(&spec)?;
    ensure!(out.contains("MOUNTED"), "insecure cannot mount: {out}");
    ensure!(
        out.contains("USERNS"),
        "insecure cannot create a user namespace: {out}"
    );
    let mut spec = snap.spec("grep '^Seccomp:' /proc/self/status");
    spec.insecure = true;
    ensure_eq!(run_ok(&spec)?, "Seccomp:\t0\n");
    ensure!(
        !out.contains("CapBnd:\t00000000a80425fb"),
        "insecure kept default caps: {out}"
    );
    Ok(())
}

fn cancel_kills_everything(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let marker = format!("forge-cancel-marker-{}", std::process::id());
    let spec = snap.spec(&format!(
        "echo started; sh -c 'exec sleep 1000 # {marker}' & sleep 1000 # {marker}"
    ));
    let token = CancelToken::new();
    let canceller = token.clone();
    let mounts_before = host_mounts();
    // If cancelling did not work, run() would wait for `sleep 1000` and the test would hang.
    let result = Sandbox::new().run(
        &spec,
        &mut |_, bytes| {
            if bytes.starts_with(b"started") {
                let c = canceller.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    c.cancel();
                });
            }
        },
        &token,
    );
    ensure!(
        matches!(result, Err(SandboxError::Cancelled)),
        "got {result:?}"
    );
    // No process with the marker survives.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            ensure!(
                !cmdline.contains(&marker),
                "survivor {:?}: {cmdline}",
                entry.file_name()
            );
        }
    }
    ensure_eq!(host_mounts(), mounts_before);
    ensure!(
        !host_mounts().contains(&snap.dir.path().display().to_string()),
        "snapshot still mounted"
    );
    ensure_eq!(tree(&snap.upper()), BTreeSet::new());
    Ok(())
}

fn stdin_is_fed(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let mut spec = snap.spec("tr a-z A-Z");
    spec.stdin = Some(b"hello stdin\n".to_vec());
    ensure_eq!(run_ok(&spec)?, "HELLO STDIN\n");
    ensure_eq!(run_ok(&snap.spec("cat; echo end"))?, "end\n");
    Ok(())
}

fn dev_is_minimal(image: &Image) -> CaseResult {
    let snap = Snapshot::new(image);
    let out = run_ok(&snap.spec(
        "ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         readlink /dev/ptmx; mount | grep -c devpts",
    ))?;
    ensure_eq!(
        out,
        "core fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n4\nnull-ok\npts/ptmx\n1\n"
    );
    Ok(())
}

fn no_mount_left_after_runs(_image: &Image) -> CaseResult {
    let mounts = host_mounts();
    ensure!(
        !mounts.contains("forge-sandbox"),
        "a sandbox mount leaked:\n{mounts}"
    );
    let tmp_leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("forge-sandbox-")
                && !name.starts_with("forge-sandbox-image")
                && !name.starts_with("forge-sandbox-snap")
        })
        .filter(|e| {
            std::fs::read_dir(e.path())
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect();
    ensure!(
        tmp_leftovers.is_empty(),
        "non-empty staging dirs left: {tmp_leftovers:?}"
    );
    Ok(())
}

fn parallel_runs(image: &Image) -> CaseResult {
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    let snap = Snapshot::new(image);
                    let mut spec = snap.spec("echo $N > /n; cat /n; hostname");
                    spec.env.push(format!("N={i}"));
                    spec.hostname = format!("box{i}");
                    run_ok(&spec)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        ensure_eq!(r?, format!("{i}\nbox{i}\n"));
    }
    Ok(())
}

fn overlay_probe(_image: &Image) -> CaseResult {
    let dir = tempfile::tempdir().unwrap();
    ensure!(
        forge_sandbox::overlay_supported(dir.path()),
        "overlay probe failed on ext4 as root"
    );
    ensure_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rootless: the test binary re-runs itself as an unprivileged user created for the purpose.

const ROOTLESS_USER: &str = "forge-rootless";
const SUBID_START: u32 = 300_000;

/// The start of `user`'s first range in an `/etc/subuid`-format file (useradd may have added one).
fn subid_start(file: &str, user: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user)
            .then(|| f.next()?.parse().ok())
            .flatten()
    })
}

fn tool_exists(name: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

fn sh_ok(cmd: &str) -> Result<String, String> {
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs inside the re-executed test binary, as the unprivileged user.
fn rootless_inner(dir: &Path, single_id: bool) -> i32 {
    if let Err(e) = forge_sandbox::enter_rootless_namespace_if_needed() {
        eprintln!("entering the user namespace: {e}");
        return 3;
    }
    let rootfs = Rootfs::Overlay {
        lower: vec![dir.join("lower")],
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    if single_id {
        // Only the caller's own id exists inside: root works, other users cannot.
        let out = run(&RunSpec::new(
            rootfs.clone(),
            sh("echo uid=$(id -u); cat /proc/self/uid_map | wc -l; touch /mine"),
        ));
        let mut spec = RunSpec::new(rootfs, sh("id"));
        spec.user = Some("tester".into());
        let denied = run(&spec);
        match (out, denied) {
            (Ok(out), Err(SandboxError::User { user, reason })) => {
                print!("{}", out.stdout);
                println!("status={}", out.status);
                println!(
                    "denied user={user} mapped-hint={}",
                    reason.contains("not mapped")
                );
                return 0;
            }
            (out, denied) => {
                println!(
                    "unexpected: {:?} / {:?}",
                    out.map(|o| (o.status, o.stdout, o.stderr)),
                    denied.map(|o| o.status)
                );
                return 1;
            }
        }
    }
    let mut ok = true;
    for (user, script) in [
        (None, "echo uid=$(id -u); wc -l < /proc/self/uid_map; touch /created && chown 1000:1000 /created; rm /etc/removeme; rm -rf /data; mkdir /data; ls /sys/class/net | grep -c lo"),
        (Some("tester"), "id"),
    ] {
        let mut spec = RunSpec::new(rootfs.clone(), sh(script));
        spec.user = user.map(String::from);
        match run(&spec) {
            Ok(out) => {
                print!("{}", out.stdout);
                eprint!("{}", out.stderr);
                println!("status={}", out.status);
                ok &= out.status.success();
            }
            Err(e) => {
                println!("error={e}");
                ok = false;
            }
        }
    }
    if ok {
        0
    } else {
        1
    }
}

fn rootless_user_namespace(image: &Image) -> CaseResult {
    for tool in ["useradd", "runuser", "newuidmap", "newgidmap"] {
        if !tool_exists(tool) {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                return Err(format!("{tool} not found (required in CI)"));
            }
            eprintln!("SKIPPED: rootless_user_namespace: {tool} not found");
            return Ok(());
        }
    }
    if sh_ok(&format!("id -u {ROOTLESS_USER}")).is_err() {
        sh_ok(&format!(
            "useradd --no-create-home --shell /usr/sbin/nologin {ROOTLESS_USER}"
        ))?;
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text
            .lines()
            .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(file)
                .unwrap();
            std::io::Write::write_all(
                &mut f,
                format!("{ROOTLESS_USER}:{SUBID_START}:65536\n").as_bytes(),
            )
            .unwrap();
        }
    }
    let uid: u32 = sh_ok(&format!("id -u {ROOTLESS_USER}"))?
        .trim()
        .parse()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("forge-rootless")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    sh_ok(&format!(
        "cp -a {} {}/lower",
        image.lower.display(),
        d.display()
    ))?;
    // The image as a rootless store would hold it: owned by the user (= root inside), and
    // tester's home by the user's subordinate id for 1000.
    sh_ok(&format!(
        "mkdir {0}/upper {0}/work && chown -R {ROOTLESS_USER}: {0}/lower {0}/upper {0}/work",
        d.display()
    ))?;
    let sub1000 = subid_start("/etc/subuid", ROOTLESS_USER).ok_or("no subuid range")? + 999;
    ensure_eq!(
        subid_start("/etc/subgid", ROOTLESS_USER).map(|s| s + 999),
        Some(sub1000)
    );
    sh_ok(&format!(
        "chown {sub1000}:{sub1000} {}/lower/home/tester",
        d.display()
    ))?;
    let exe = d.join("forge-sandbox-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", ROOTLESS_USER, "--"])
        .arg(&exe)
        .arg("--rootless-case")
        .arg(d)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "rootless run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    ensure_eq!(
        stdout,
        format!(
            "uid=0\n2\n1\nstatus=exit code 0\n\
             uid=1000(tester) gid=1000(tester) groups=1000(tester),2000(extra),2001(more)\nstatus=exit code 0\n"
        )
    );
    let upper = d.join("upper");
    let created = std::fs::metadata(upper.join("created")).map_err(|e| e.to_string())?;
    ensure_eq!((created.uid(), created.gid()), (sub1000, sub1000));
    let wh = std::fs::symlink_metadata(upper.join("etc/removeme")).map_err(|e| e.to_string())?;
    ensure!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "no whiteout for etc/removeme"
    );
    ensure_eq!(
        tree(&upper),
        BTreeSet::from(["created", "data", "etc", "etc/removeme"].map(String::from))
    );
    let etc = std::fs::metadata(upper.join("etc")).unwrap();
    ensure_eq!(etc.uid(), uid);
    Ok(())
}

const SINGLE_USER: &str = "forge-rootless1";

/// Removes `user`'s lines from an `/etc/subuid`-format file (useradd may have added some).
fn drop_subids(file: &str, user: &str) {
    if let Ok(text) = std::fs::read_to_string(file) {
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{user}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept != text {
            std::fs::write(file, kept).unwrap();
        }
    }
}

fn rootless_single_id_map(image: &Image) -> CaseResult {
    for tool in ["useradd", "runuser"] {
        if !tool_exists(tool) {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                return Err(format!("{tool} not found (required in CI)"));
            }
            eprintln!("SKIPPED: rootless_single_id_map: {tool} not found");
            return Ok(());
        }
    }
    if sh_ok(&format!("id -u {SINGLE_USER}")).is_err() {
        sh_ok(&format!(
            "useradd --no-create-home --shell /usr/sbin/nologin {SINGLE_USER}"
        ))?;
    }
    drop_subids("/etc/subuid", SINGLE_USER);
    drop_subids("/etc/subgid", SINGLE_USER);
    let uid: u32 = sh_ok(&format!("id -u {SINGLE_USER}"))?
        .trim()
        .parse()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("forge-rootless")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    sh_ok(&format!(
        "cp -a {} {}/lower",
        image.lower.display(),
        d.display()
    ))?;
    sh_ok(&format!(
        "mkdir {0}/upper {0}/work && chown -R {SINGLE_USER}: {0}/lower {0}/upper {0}/work",
        d.display()
    ))?;
    let exe = d.join("forge-sandbox-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", SINGLE_USER, "--"])
        .arg(&exe)
        .arg("--rootless-case")
        .arg(d)
        .arg("single")
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "single-id rootless run failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure_eq!(
        stdout,
        "uid=0\n1\nstatus=exit code 0\ndenied user=tester mapped-hint=true\n"
    );
    let mine = std::fs::metadata(d.join("upper/mine")).map_err(|e| e.to_string())?;
    ensure_eq!(mine.uid(), uid);
    Ok(())
}

type Case = (&'static str, fn(&Image) -> CaseResult);

const CASES: &[Case] = &[
    ("proc_and_pid1", proc_and_pid1),
    ("hostname_isolated", hostname_isolated),
    ("host_paths_invisible", host_paths_invisible),
    ("whiteout_and_opaque", whiteout_and_opaque),
    ("user_switching", user_switching),
    ("workdir_created", workdir_created),
    ("env_defaults", env_defaults),
    ("exit_code_and_signal", exit_code_and_signal),
    ("output_streaming_order", output_streaming_order),
    ("network_none_only_lo", network_none_only_lo),
    ("secret_not_in_upper", secret_not_in_upper),
    ("bind_readonly_and_tmpfs", bind_readonly_and_tmpfs),
    ("socket_mount", socket_mount),
    ("no_etc_files_leak", no_etc_files_leak),
    ("rootfs_dir_fallback", rootfs_dir_fallback),
    ("capabilities_and_insecure", capabilities_and_insecure),
    ("cancel_kills_everything", cancel_kills_everything),
    ("stdin_is_fed", stdin_is_fed),
    ("dev_is_minimal", dev_is_minimal),
    ("parallel_runs", parallel_runs),
    ("overlay_probe", overlay_probe),
    ("rootless_user_namespace", rootless_user_namespace),
    ("rootless_single_id_map", rootless_single_id_map),
    ("no_mount_left_after_runs", no_mount_left_after_runs),
];

fn main() {
    forge_sandbox::maybe_run_helper();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--rootless-case") {
        let single = args.get(3).map(String::as_str) == Some("single");
        std::process::exit(rootless_inner(Path::new(&args[2]), single));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if unsafe { libc::geteuid() } != 0 {
        if ci {
            eprintln!("FAILED: the sandbox integration tests must run as root in CI");
            std::process::exit(1);
        }
        eprintln!("SKIPPED: sandbox integration tests need root");
        return;
    }
    if !Path::new("/usr/bin/busybox").exists() {
        if ci {
            eprintln!("FAILED: /usr/bin/busybox not found");
            std::process::exit(1);
        }
        eprintln!("SKIPPED: /usr/bin/busybox not found");
        return;
    }
    let image = Image::build();
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&image)));
        match result {
            Ok(Ok(())) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Ok(Err(msg)) => {
                failed += 1;
                println!("test {name} ... FAILED\n{msg}\n");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)\n");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
