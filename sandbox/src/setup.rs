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
        }
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

/// Mounts the overlay, dropping options the kernel rejects (`EINVAL`): first those whose module
/// parameter is absent, then `redirect_dir`/`metacopy` altogether, then `userxattr`.
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
    let mut candidates: Vec<Vec<&str>> = Vec::new();
    let userxattr: &[&str] = if ctx.userns { &["userxattr"] } else { &[] };
    let full: Vec<&str> = ["redirect_dir=off", "metacopy=off"]
        .into_iter()
        .chain(userxattr.iter().copied())
        .collect();
    candidates.push(full);
    let mut detected = Vec::new();
    if ctx.overlay.redirect_dir {
        detected.push("redirect_dir=off");
    }
    if ctx.overlay.metacopy {
        detected.push("metacopy=off");
    }
    detected.extend(userxattr.iter().copied());
    candidates.push(detected);
    candidates.push(userxattr.to_vec());
    candidates.push(Vec::new());
    candidates.dedup();

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
