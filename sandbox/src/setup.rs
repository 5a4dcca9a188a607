//! The mount sequence that turns a directory tree into the sandbox's `/`.
//!
//! Runs in the sandbox's init process (pid 1 of the new pid namespace), before `execve`:
//!
//! 1. a private mount namespace (`unshare(CLONE_NEWNS)`, then `/` made `rprivate`), so nothing
//!    below propagates to the host and everything vanishes with the process;
//! 2. a tmpfs on the staging directory, holding the generated files (hosts, resolv.conf,
//!    hostname, secrets) and the mount point of the rootfs;
//! 3. the rootfs: overlayfs (lowers + upper + work) or a bind of an already-merged directory;
//! 4. `/proc`, `/dev` (a tmpfs with host device nodes bound in, devpts, shm), `/sys`;
//! 5. loopback up (new network namespace only), hostname, `/etc/{hosts,resolv.conf,hostname}`;
//! 6. the caller's mounts (binds, tmpfs, secrets, sockets), shallowest target first;
//! 7. Docker's masked and read-only paths (unless insecure);
//! 8. `pivot_root` into the rootfs and a lazy unmount of the old root.
//!
//! Every mount point created in the rootfs is recorded as a [`Stub`] for later removal.

use std::path::{Path, PathBuf};

use crate::error::{Context, HResult, HelperError};
use crate::etcfiles;
use crate::paths::{clean_abs, resolve_in_root};
use crate::spec::{MountKind, Network, Rootfs, RunSpec};
use crate::stubs::{Stub, StubKind, StubTracker};
use crate::syscall::{MsFlags, Syscall};

/// Docker's default masked paths: hidden behind an empty read-only tmpfs (directories) or
/// `/dev/null` (files).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bound into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Which overlay mount options the running kernel knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OverlayFeatures {
    pub redirect_dir: bool,
    pub metacopy: bool,
    pub index: bool,
}

impl OverlayFeatures {
    /// Each overlay option has a module parameter of the same name.
    pub(crate) fn detect() -> OverlayFeatures {
        let param = |name: &str| {
            Path::new("/sys/module/overlay/parameters")
                .join(name)
                .exists()
        };
        OverlayFeatures {
            redirect_dir: param("redirect_dir"),
            metacopy: param("metacopy"),
            index: param("index"),
        }
    }

    /// Option sets to try, best first: forge's full set (`index=off` as containerd and Docker
    /// add it, so that layers can be shared by any number of mounts; no redirects or metacopy,
    /// so that the upper directory is a self-contained diff), then only the options whose
    /// module parameter exists, then none; `userxattr` in a user namespace throughout.
    pub(crate) fn option_sets(&self, userns: bool) -> Vec<Vec<&'static str>> {
        let userxattr: &[&'static str] = if userns { &["userxattr"] } else { &[] };
        let known = [
            ("index=off", self.index),
            ("redirect_dir=off", self.redirect_dir),
            ("metacopy=off", self.metacopy),
        ];
        let mut sets: Vec<Vec<&'static str>> = vec![
            known
                .iter()
                .map(|(o, _)| *o)
                .chain(userxattr.iter().copied())
                .collect(),
            known
                .iter()
                .filter(|(_, present)| *present)
                .map(|(o, _)| *o)
                .chain(userxattr.iter().copied())
                .collect(),
            userxattr.to_vec(),
            Vec::new(),
        ];
        sets.dedup();
        sets
    }
}

/// What the setup needs besides the spec.
#[derive(Debug, Clone)]
pub(crate) struct SetupContext {
    /// Empty host directory; a tmpfs is mounted on it.
    pub staging: PathBuf,
    /// Running in a user namespace (rootless).
    pub userns: bool,
    /// The host's `/etc/resolv.conf`.
    pub host_resolv_conf: String,
    pub overlay: OverlayFeatures,
}

impl SetupContext {
    pub(crate) fn root(&self) -> PathBuf {
        self.staging.join("root")
    }
    fn files(&self) -> PathBuf {
        self.staging.join("files")
    }
}

const PAGE_LIMIT: usize = 4095;

/// Builds the overlay mount data. Paths are escaped for overlay's option parser; a comma cannot
/// be expressed in `mount(2)` data at all.
pub(crate) fn overlay_data(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    extra: &[&str],
) -> HResult<String> {
    fn esc(p: &Path) -> HResult<String> {
        let s = p.to_str().ok_or_else(|| {
            HelperError::Spec(format!("overlay path {} is not UTF-8", p.display()))
        })?;
        if s.contains(',') {
            return Err(HelperError::Spec(format!(
                "overlay path {s:?} contains a comma, which mount options cannot express"
            )));
        }
        Ok(s.replace('\\', "\\\\").replace(':', "\\:"))
    }
    let lowers = lower.iter().map(|p| esc(p)).collect::<HResult<Vec<_>>>()?;
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        esc(upper)?,
        esc(work)?
    );
    for opt in extra {
        data.push(',');
        data.push_str(opt);
    }
    Ok(data)
}

/// Mounts the overlay, falling back through [`OverlayFeatures::option_sets`] while the kernel
/// rejects the options (`EINVAL`).
fn mount_overlay(
    sys: &dyn Syscall,
    ctx: &SetupContext,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> HResult<()> {
    if lower.is_empty() {
        return Err(HelperError::Spec(
            "overlay rootfs needs at least one lower directory".into(),
        ));
    }
    let candidates = ctx.overlay.option_sets(ctx.userns);

    // Long layer lists can exceed the one page mount(2) accepts: switch to paths relative to
    // their common parent (the way Docker's overlay2 driver does).
    let mut lower_paths = lower.to_vec();
    let (mut upper_path, mut work_path) = (upper.to_path_buf(), work.to_path_buf());
    if overlay_data(&lower_paths, &upper_path, &work_path, &candidates[0])?.len() > PAGE_LIMIT {
        let all: Vec<&Path> = lower
            .iter()
            .map(PathBuf::as_path)
            .chain([upper, work])
            .collect();
        let common = common_ancestor(&all);
        sys.chdir(&common)
            .ctx(|| format!("chdir {} for relative overlay paths", common.display()))?;
        let rel = |p: &Path| {
            p.strip_prefix(&common)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| p.to_path_buf())
        };
        lower_paths = lower.iter().map(|p| rel(p)).collect();
        upper_path = rel(upper);
        work_path = rel(work);
    }

    let mut last_err = None;
    for extra in &candidates {
        let data = overlay_data(&lower_paths, &upper_path, &work_path, extra)?;
        if data.len() > PAGE_LIMIT {
            return Err(HelperError::Sys {
                context: format!(
                    "overlay mount options for {} layers are {} bytes, more than mount(2) accepts",
                    lower.len(),
                    data.len()
                ),
                errno: libc::E2BIG,
            });
        }
        match sys.mount(
            Some(Path::new("overlay")),
            target,
            Some("overlay"),
            0,
            Some(&data),
        ) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some((data, e)),
            Err(e) => {
                return Err(HelperError::sys(
                    format!("mounting overlay ({data}) on {}", target.display()),
                    e,
                ))
            }
        }
    }
    let (data, e) = last_err.expect("at least one candidate was tried");
    Err(HelperError::sys(
        format!("mounting overlay ({data}) on {}", target.display()),
        e,
    ))
}

fn common_ancestor(paths: &[&Path]) -> PathBuf {
    let mut common = paths[0].parent().unwrap_or(Path::new("/")).to_path_buf();
    while !paths.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    common
}

fn mount(
    sys: &dyn Syscall,
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> HResult<()> {
    sys.mount(source.map(Path::new), target, fstype, flags, data)
        .ctx(|| {
            format!(
                "mounting {} ({}) on {}",
                source.unwrap_or("none"),
                fstype.unwrap_or("bind"),
                target.display()
            )
        })
}

fn bind(sys: &dyn Syscall, source: &Path, target: &Path, recursive: bool) -> HResult<()> {
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    sys.mount(Some(source), target, None, flags, None)
        .ctx(|| format!("bind-mounting {} on {}", source.display(), target.display()))
}

/// Runs steps 1–8 of the module doc. On return the process's root is the sandbox rootfs; `stubs`
/// holds the mount points created so far, also when an error is returned.
pub(crate) fn setup_rootfs(
    sys: &dyn Syscall,
    spec: &RunSpec,
    ctx: &SetupContext,
    stubs: &mut Vec<Stub>,
) -> HResult<()> {
    sys.unshare(libc::CLONE_NEWNS)
        .ctx(|| "unshare(CLONE_NEWNS)".into())?;
    mount(
        sys,
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    mount(
        sys,
        Some("tmpfs"),
        &ctx.staging,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    let root = ctx.root();
    let files = ctx.files();
    sys.mkdir(&root, 0o755)
        .ctx(|| format!("mkdir {}", root.display()))?;
    sys.mkdir(&files, 0o700)
        .ctx(|| format!("mkdir {}", files.display()))?;

    let overlay_dirs = match &spec.rootfs {
        Rootfs::Overlay { lower, upper, work } => {
            mount_overlay(sys, ctx, lower, upper, work, &root)?;
            Some((upper.clone(), lower.clone()))
        }
        Rootfs::Dir(dir) => {
            bind(sys, dir, &root, true)?;
            None
        }
    };
    let mut tracker = StubTracker::new(&root, overlay_dirs, stubs);
    let mut place = |sys: &dyn Syscall, target: &str, kind: StubKind| -> HResult<PathBuf> {
        let rel =
            resolve_in_root(&root, target).ctx(|| format!("resolving {target} in the rootfs"))?;
        tracker.ensure(sys, &rel, kind)
    };

    // /proc: a procfs of the new pid namespace.
    let proc_dir = place(sys, "/proc", StubKind::Dir)?;
    mount(
        sys,
        Some("proc"),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;

    let dev = place(sys, "/dev", StubKind::Dir)?;
    mount_dev(sys, &dev)?;

    let sys_dir = place(sys, "/sys", StubKind::Dir)?;
    mount_sys(sys, &sys_dir, spec.insecure)?;

    if spec.network == Network::None {
        sys.loopback_up().ctx(|| "bringing up lo".into())?;
    }
    sys.sethostname(&spec.hostname)
        .ctx(|| format!("sethostname {:?}", spec.hostname))?;

    let generated = [
        ("hosts", etcfiles::hosts(&spec.hostname)),
        (
            "resolv.conf",
            etcfiles::resolv_conf(&ctx.host_resolv_conf, spec.network == Network::None),
        ),
        ("hostname", etcfiles::hostname_file(&spec.hostname)),
    ];
    for (name, content) in generated {
        let file = files.join(name);
        sys.write_file(&file, content.as_bytes(), 0o644)
            .ctx(|| format!("writing {}", file.display()))?;
        let target = place(sys, &format!("/etc/{name}"), StubKind::File)?;
        bind(sys, &file, &target, false)?;
    }

    let mut mounts: Vec<(usize, &crate::spec::Mount)> = spec.mounts.iter().enumerate().collect();
    mounts.sort_by_key(|(_, m)| clean_abs(&m.target).components().count());
    for (index, m) in mounts {
        match &m.kind {
            MountKind::Bind { source, readonly } => {
                let meta = std::fs::metadata(source)
                    .ctx(|| format!("bind source {}", source.display()))?;
                let kind = if meta.is_dir() {
                    StubKind::Dir
                } else {
                    StubKind::File
                };
                let target = place(sys, &m.target, kind)?;
                bind(sys, source, &target, true)?;
                if *readonly {
                    sys.make_readonly(&target, true)
                        .ctx(|| format!("making {} read-only", target.display()))?;
                }
            }
            MountKind::Tmpfs { size } => {
                let target = place(sys, &m.target, StubKind::Dir)?;
                let data = match size {
                    Some(size) => format!("mode=1777,size={size}"),
                    None => "mode=1777".to_string(),
                };
                mount(
                    sys,
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&data),
                )?;
            }
            MountKind::SecretFile {
                data,
                mode,
                uid,
                gid,
            } => {
                let file = files.join(format!("secret-{index}"));
                sys.write_file(&file, data, *mode & 0o7777)
                    .ctx(|| format!("writing secret for {}", m.target))?;
                sys.lchown(&file, *uid, *gid)
                    .ctx(|| format!("chown {uid}:{gid} of secret for {}", m.target))?;
                let target = place(sys, &m.target, StubKind::File)?;
                bind(sys, &file, &target, false)?;
                sys.make_readonly(&target, false)
                    .ctx(|| format!("making {} read-only", target.display()))?;
            }
            MountKind::Socket { source } => {
                let target = place(sys, &m.target, StubKind::File)?;
                bind(sys, source, &target, false)?;
            }
        }
    }

    if !spec.insecure {
        for path in MASKED_PATHS {
            let target = root.join(&path[1..]);
            let Ok(meta) = std::fs::symlink_metadata(&target) else {
                continue;
            };
            if meta.is_dir() {
                mount(
                    sys,
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    libc::MS_RDONLY,
                    Some("size=0"),
                )?;
            } else {
                bind(sys, &dev.join("null"), &target, false)?;
            }
        }
        for path in READONLY_PATHS {
            let target = root.join(&path[1..]);
            if std::fs::symlink_metadata(&target).is_err() {
                continue;
            }
            bind(sys, &target, &target, true)?;
            sys.make_readonly(&target, true)
                .ctx(|| format!("making {} read-only", target.display()))?;
        }
    }

    // pivot_root(".", ".") stacks the old root on top of the new one; a lazy unmount of "."
    // then detaches it, leaving no host path reachable.
    sys.chdir(&root)
        .ctx(|| format!("chdir {}", root.display()))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .ctx(|| format!("pivot_root into {}", root.display()))?;
    sys.umount2(Path::new("."), libc::MNT_DETACH)
        .ctx(|| "detaching the old root".into())?;
    sys.chdir(Path::new("/")).ctx(|| "chdir /".into())?;
    Ok(())
}

fn mount_dev(sys: &dyn Syscall, dev: &Path) -> HResult<()> {
    mount(
        sys,
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if std::fs::symlink_metadata(&host).is_err() {
            continue;
        }
        let node = dev.join(name);
        sys.create_file(&node, 0o666)
            .ctx(|| format!("creating {}", node.display()))?;
        bind(sys, &host, &node, false)?;
    }
    let pts = dev.join("pts");
    sys.mkdir(&pts, 0o755)
        .ctx(|| format!("mkdir {}", pts.display()))?;
    let pts_flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    let with_gid = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    if let Err(e) = sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        pts_flags,
        Some(with_gid),
    ) {
        // gid 5 (tty) may be unmapped in a user namespace.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
            return Err(HelperError::sys(
                format!("mounting devpts on {}", pts.display()),
                e,
            ));
        }
        mount(
            sys,
            Some("devpts"),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
    }
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o1777)
        .ctx(|| format!("mkdir {}", shm.display()))?;
    mount(
        sys,
        Some("shm"),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let link = dev.join(link);
        sys.symlink(Path::new(target), &link)
            .ctx(|| format!("symlink {}", link.display()))?;
    }
    Ok(())
}

fn mount_sys(sys: &dyn Syscall, target: &Path, insecure: bool) -> HResult<()> {
    let ro = if insecure { 0 } else { libc::MS_RDONLY };
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | ro;
    match sys.mount(Some(Path::new("sysfs")), target, Some("sysfs"), flags, None) {
        Ok(()) => Ok(()),
        // A user namespace that does not own the network namespace may not mount sysfs.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            bind(sys, Path::new("/sys"), target, true)?;
            if !insecure {
                sys.make_readonly(target, true)
                    .ctx(|| format!("making {} read-only", target.display()))?;
            }
            Ok(())
        }
        Err(e) => Err(HelperError::sys(
            format!("mounting sysfs on {}", target.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mount;
    use crate::syscall::testing::{Call, RecordingSyscall};

    /// A staging dir whose `root/` stands in for the mounted rootfs (the fake mounts nothing).
    struct Fixture {
        staging: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let staging = tempfile::tempdir().unwrap();
            let root = staging.path().join("root");
            for d in ["etc", "proc/acpi", "proc/sys"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            std::fs::write(root.join("proc/kcore"), "").unwrap();
            Fixture { staging }
        }

        fn ctx(&self, userns: bool, overlay: OverlayFeatures) -> SetupContext {
            SetupContext {
                staging: self.staging.path().to_path_buf(),
                userns,
                host_resolv_conf: "nameserver 127.0.0.53\n".into(),
                overlay,
            }
        }

        fn root(&self) -> PathBuf {
            self.staging.path().join("root")
        }
    }

    const ALL: OverlayFeatures = OverlayFeatures {
        redirect_dir: true,
        metacopy: true,
        index: true,
    };

    fn overlay_spec() -> RunSpec {
        RunSpec::new(
            Rootfs::Overlay {
                lower: vec!["/s/l2".into(), "/s/l1".into()],
                upper: "/s/up".into(),
                work: "/s/work".into(),
            },
            vec!["true".into()],
        )
    }

    fn mounts_on(calls: &[Call], target: &Path) -> Vec<Call> {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { target: t, .. } if t == target))
            .cloned()
            .collect()
    }

    fn mount_call(
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount {
            source: source.map(PathBuf::from),
            target: target.to_path_buf(),
            fstype: fstype.map(String::from),
            flags,
            data: data.map(String::from),
        }
    }

    #[test]
    fn sequence_starts_private_and_ends_with_pivot() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        let mut stubs = Vec::new();
        setup_rootfs(&sys, &overlay_spec(), &fx.ctx(false, ALL), &mut stubs).unwrap();
        let calls = sys.calls();
        let staging = fx.staging.path();
        assert_eq!(
            calls[..6],
            [
                Call::Unshare(libc::CLONE_NEWNS),
                mount_call(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None),
                mount_call(
                    Some("tmpfs"),
                    staging,
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some("mode=0755")
                ),
                Call::Mkdir(fx.root(), 0o755),
                Call::Mkdir(staging.join("files"), 0o700),
                mount_call(
                    Some("overlay"),
                    &fx.root(),
                    Some("overlay"),
                    0,
                    Some("lowerdir=/s/l2:/s/l1,upperdir=/s/up,workdir=/s/work,index=off,redirect_dir=off,metacopy=off")
                ),
            ]
        );
        assert_eq!(
            calls[calls.len() - 4..],
            [
                Call::Chdir(fx.root()),
                Call::PivotRoot(".".into(), ".".into()),
                Call::Umount2(".".into(), libc::MNT_DETACH),
                Call::Chdir("/".into()),
            ]
        );
        // proc existed; dev, sys and the /etc files are stubs.
        let stub_paths: Vec<_> = stubs.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            stub_paths,
            ["dev", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"].map(PathBuf::from)
        );
        assert_eq!(
            mounts_on(&calls, &fx.root().join("proc")),
            [mount_call(
                Some("proc"),
                &fx.root().join("proc"),
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None
            )]
        );
        assert!(!calls.contains(&Call::LoopbackUp));
        assert!(calls.contains(&Call::Sethostname("forge-sandbox".into())));
        // Host network: resolv.conf is the host's.
        assert!(calls.contains(&Call::WriteFile(
            staging.join("files/resolv.conf"),
            b"nameserver 127.0.0.53\n".to_vec(),
            0o644
        )));
        assert_eq!(
            mounts_on(&calls, &fx.root().join("etc/hosts")),
            [mount_call(
                Some(staging.join("files/hosts").to_str().unwrap()),
                &fx.root().join("etc/hosts"),
                None,
                libc::MS_BIND,
                None
            )]
        );
    }

    #[test]
    fn masked_and_readonly_paths() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        setup_rootfs(&sys, &overlay_spec(), &fx.ctx(false, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        let root = fx.root();
        assert_eq!(
            mounts_on(&calls, &root.join("proc/kcore")),
            [mount_call(
                Some(root.join("dev/null").to_str().unwrap()),
                &root.join("proc/kcore"),
                None,
                libc::MS_BIND,
                None
            )]
        );
        assert_eq!(
            mounts_on(&calls, &root.join("proc/acpi")),
            [mount_call(
                Some("tmpfs"),
                &root.join("proc/acpi"),
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some("size=0")
            )]
        );
        assert!(calls.contains(&Call::MakeReadonly(root.join("proc/sys"), true)));
        // Paths the (fake) procfs does not have are skipped.
        assert!(mounts_on(&calls, &root.join("proc/keys")).is_empty());
        let sysfs = mounts_on(&calls, &root.join("sys"));
        assert_eq!(
            sysfs,
            [mount_call(
                Some("sysfs"),
                &root.join("sys"),
                Some("sysfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
                None
            )]
        );
    }

    #[test]
    fn insecure_masks_nothing_and_keeps_sys_writable() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        let spec = RunSpec {
            insecure: true,
            ..overlay_spec()
        };
        setup_rootfs(&sys, &spec, &fx.ctx(false, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        let root = fx.root();
        assert!(mounts_on(&calls, &root.join("proc/kcore")).is_empty());
        assert!(!calls.iter().any(|c| matches!(c, Call::MakeReadonly(..))));
        match &mounts_on(&calls, &root.join("sys"))[0] {
            Call::Mount { flags, .. } => assert_eq!(flags & libc::MS_RDONLY, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlay_options_fall_back_on_einval() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        // A kernel without metacopy: the option is unknown.
        sys.fail_when(|c| match c {
            Call::Mount {
                fstype: Some(t),
                data: Some(d),
                ..
            } if t == "overlay" && d.contains("metacopy") => Some(libc::EINVAL),
            _ => None,
        });
        let features = OverlayFeatures {
            redirect_dir: true,
            metacopy: false,
            index: true,
        };
        setup_rootfs(
            &sys,
            &overlay_spec(),
            &fx.ctx(true, features),
            &mut Vec::new(),
        )
        .unwrap();
        let tries: Vec<String> = mounts_on(&sys.calls(), &fx.root())
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { data, .. } => data,
                _ => None,
            })
            .collect();
        let base = "lowerdir=/s/l2:/s/l1,upperdir=/s/up,workdir=/s/work";
        assert_eq!(
            tries,
            [
                format!("{base},index=off,redirect_dir=off,metacopy=off,userxattr"),
                format!("{base},index=off,redirect_dir=off,userxattr"),
            ]
        );
    }

    #[test]
    fn overlay_errors_other_than_einval_are_reported() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        sys.fail_when(|c| {
            matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay")
                .then_some(libc::EPERM)
        });
        let err =
            setup_rootfs(&sys, &overlay_spec(), &fx.ctx(false, ALL), &mut Vec::new()).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EPERM));
        assert!(err.to_string().contains("mounting overlay"), "{err}");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(..))));
    }

    #[test]
    fn overlay_paths_are_escaped_and_commas_rejected() {
        let data =
            overlay_data(&["/a:b".into()], Path::new("/u\\x"), Path::new("/w"), &[]).unwrap();
        assert_eq!(data, "lowerdir=/a\\:b,upperdir=/u\\\\x,workdir=/w");
        assert!(matches!(
            overlay_data(&["/a,b".into()], Path::new("/u"), Path::new("/w"), &[]),
            Err(HelperError::Spec(_))
        ));
    }

    #[test]
    fn long_layer_lists_use_relative_paths() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        let lower: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/forge/snapshots/{i:04}/fs")))
            .collect();
        let spec = RunSpec {
            rootfs: Rootfs::Overlay {
                lower,
                upper: "/var/lib/forge/snapshots/9999/fs".into(),
                work: "/var/lib/forge/snapshots/9999/work".into(),
            },
            ..overlay_spec()
        };
        setup_rootfs(&sys, &spec, &fx.ctx(false, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        let chdir = calls
            .iter()
            .position(|c| c == &Call::Chdir("/var/lib/forge/snapshots".into()))
            .expect("chdir to the common parent");
        match &calls[chdir + 1] {
            Call::Mount { data: Some(d), .. } => {
                assert!(d.starts_with("lowerdir=0000/fs:0001/fs:"), "{d}");
                assert!(d.contains(",upperdir=9999/fs,workdir=9999/work,"), "{d}");
                assert!(d.len() <= PAGE_LIMIT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sysfs_denied_falls_back_to_readonly_rbind() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        sys.fail_when(|c| {
            matches!(c, Call::Mount { fstype: Some(t), .. } if t == "sysfs").then_some(libc::EPERM)
        });
        setup_rootfs(&sys, &overlay_spec(), &fx.ctx(true, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        let target = fx.root().join("sys");
        let rbind = mount_call(
            Some("/sys"),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        );
        let i = calls
            .iter()
            .position(|c| c == &rbind)
            .expect("rbind of /sys");
        assert_eq!(calls[i + 1], Call::MakeReadonly(target, true));
    }

    #[test]
    fn devpts_without_tty_group_in_a_user_namespace() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        sys.fail_when(|c| match c {
            Call::Mount { data: Some(d), .. } if d.contains("gid=5") => Some(libc::EINVAL),
            _ => None,
        });
        setup_rootfs(&sys, &overlay_spec(), &fx.ctx(true, ALL), &mut Vec::new()).unwrap();
        let pts = mounts_on(&sys.calls(), &fx.root().join("dev/pts"));
        assert_eq!(pts.len(), 2);
        assert!(
            matches!(&pts[1], Call::Mount { data: Some(d), .. } if d == "newinstance,ptmxmode=0666,mode=0620")
        );
    }

    #[test]
    fn network_none_brings_up_lo_and_rewrites_resolv_conf() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        let spec = RunSpec {
            network: Network::None,
            ..overlay_spec()
        };
        setup_rootfs(&sys, &spec, &fx.ctx(false, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::LoopbackUp));
        assert!(calls.contains(&Call::WriteFile(
            fx.staging.path().join("files/resolv.conf"),
            b"nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_vec(),
            0o644
        )));
    }

    #[test]
    fn user_mounts_shallowest_first_with_secrets_read_only() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        let host = tempfile::tempdir().unwrap();
        let spec = RunSpec {
            mounts: vec![
                Mount {
                    target: "/cache/deep/er".into(),
                    kind: MountKind::Tmpfs { size: Some(4096) },
                },
                Mount {
                    target: "/cache".into(),
                    kind: MountKind::Bind {
                        source: host.path().to_path_buf(),
                        readonly: true,
                    },
                },
                Mount {
                    target: "/run/secrets/id".into(),
                    kind: MountKind::SecretFile {
                        data: b"pw".to_vec(),
                        mode: 0o400,
                        uid: 7,
                        gid: 8,
                    },
                },
            ],
            ..overlay_spec()
        };
        setup_rootfs(&sys, &spec, &fx.ctx(false, ALL), &mut Vec::new()).unwrap();
        let calls = sys.calls();
        let root = fx.root();
        let pos = |want: &Call| calls.iter().position(|c| c == want).unwrap_or(usize::MAX);
        let bind_cache = mount_call(
            Some(host.path().to_str().unwrap()),
            &root.join("cache"),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        );
        let tmpfs_deep = mount_call(
            Some("tmpfs"),
            &root.join("cache/deep/er"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777,size=4096"),
        );
        assert!(pos(&bind_cache) < pos(&tmpfs_deep) && pos(&tmpfs_deep) != usize::MAX);
        assert_eq!(
            pos(&bind_cache) + 1,
            pos(&Call::MakeReadonly(root.join("cache"), true))
        );
        let secret = fx.staging.path().join("files/secret-2");
        let write = pos(&Call::WriteFile(secret.clone(), b"pw".to_vec(), 0o400));
        assert_eq!(pos(&Call::Lchown(secret, 7, 8)), write + 1);
        assert!(calls.contains(&Call::MakeReadonly(root.join("run/secrets/id"), false)));
    }

    #[test]
    fn stubs_are_reported_when_setup_fails() {
        let fx = Fixture::new();
        let sys = RecordingSyscall::new();
        sys.fail_when(|c| matches!(c, Call::PivotRoot(..)).then_some(libc::EINVAL));
        let mut stubs = Vec::new();
        let err = setup_rootfs(&sys, &overlay_spec(), &fx.ctx(false, ALL), &mut stubs).unwrap_err();
        assert!(err.to_string().contains("pivot_root"), "{err}");
        assert_eq!(stubs.len(), 5);
    }
}
