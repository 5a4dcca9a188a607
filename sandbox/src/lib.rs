//! forge's RUN sandbox: runs a command in fresh Linux namespaces on an overlay snapshot, with
//! no daemon and no external runtime (the role runc plays for BuildKit).
//!
//! # How a run works
//!
//! [`Sandbox::run`] starts a helper process (by default the running executable again, with
//! [`HELPER_ARG`] as its first argument), hands it the [`RunSpec`] over a socket and streams the
//! command's stdout and stderr back to a callback. The helper unshares the pid, uts, ipc (and for
//! [`Network::None`] net) namespaces and forks the sandbox's init, pid 1 of the new pid
//! namespace, which in its own mount namespace:
//!
//! * mounts the rootfs: overlayfs over the lower snapshots with a fresh upper directory
//!   (`index=off,redirect_dir=off,metacopy=off`, plus `userxattr` in a user namespace), or a plain
//!   directory for the copy fallback;
//! * adds `/proc`, a minimal `/dev`, a read-only `/sys`, generated `/etc/hosts`,
//!   `/etc/resolv.conf`, `/etc/hostname`, and the caller's bind, tmpfs, secret and socket
//!   mounts;
//! * masks Docker's sensitive `/proc` and `/sys` paths, `pivot_root`s and detaches the host;
//! * resolves `USER` in the image's `/etc/passwd`/`/etc/group` and creates the working
//!   directory;
//! * forks the command, which drops to Docker's default capabilities and the user's ids and
//!   `execve`s; init stays pid 1, reaps orphans and reports the command's exit status (so
//!   `kill $$` in a RUN works, as under `docker run --init`).
//!
//! Everything mounted lives in that mount namespace and disappears with it; cancelling kills
//! init, and with it the whole pid namespace.
//!
//! # What the layer writer sees
//!
//! After a run, the upper directory holds exactly the command's changes in overlayfs's format:
//! a deleted file is a 0:0 character device (a whiteout), a directory removed and recreated
//! carries `trusted.overlay.opaque=y` (`user.overlay.opaque` in rootless mode). Mount points the
//! sandbox had to create (`/proc`, `/etc/hosts`, a secret's target, ...) are removed again, and
//! directories overlayfs copied up only to hold them too. The work directory belongs to
//! overlayfs; ignore it. With [`Rootfs::Dir`] the tree itself is modified in place, minus the
//! same mount points.
//!
//! # Wiring it into a program
//!
//! The helper is the program itself, so its `main` must call [`maybe_run_helper`] first thing.
//! A non-root program calls [`enter_rootless_namespace_if_needed`] next, which re-executes it
//! inside a user namespace where it is root (like `buildah unshare`).
//!
//! ```no_run
//! use forge_sandbox::{CancelToken, OutputStream, Rootfs, RunSpec, Sandbox};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     forge_sandbox::maybe_run_helper();
//!     forge_sandbox::enter_rootless_namespace_if_needed()?;
//!
//!     let rootfs = Rootfs::Overlay {
//!         lower: vec!["/var/lib/forge/snapshots/3/fs".into()],
//!         upper: "/var/lib/forge/snapshots/4/fs".into(),
//!         work: "/var/lib/forge/snapshots/4/work".into(),
//!     };
//!     let mut spec = RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), "echo hi > /greeting".into()]);
//!     spec.env.push("LANG=C.UTF-8".into());
//!     let status = Sandbox::new().run(
//!         &spec,
//!         &mut |stream, bytes| match stream {
//!             OutputStream::Stdout => print!("{}", String::from_utf8_lossy(bytes)),
//!             OutputStream::Stderr => eprint!("{}", String::from_utf8_lossy(bytes)),
//!         },
//!         &CancelToken::new(),
//!     )?;
//!     assert!(status.success());
//!     // /var/lib/forge/snapshots/4/fs now holds `greeting` and nothing else.
//!     Ok(())
//! }
//! ```
//!
//! # Without overlayfs
//!
//! [`overlay_supported`] tells whether overlayfs works where the snapshots live (it does not on
//! some filesystems, e.g. overlay-on-overlay in some containers). When it does not, copy the
//! parent snapshot with [`copy_tree`], run on [`Rootfs::Dir`], and diff the two trees: mount
//! points the sandbox had to create are removed from the directory afterwards just as from an
//! upper directory.
//!
//! # Security
//!
//! Capabilities are Docker's default set ([`DEFAULT_CAPABILITIES`]) in the bounding, effective and
//! permitted sets (inheritable and ambient empty), so a non-root `USER` ends up with none after
//! `execve`. `no_new_privs` is not set, as in BuildKit (which relaxes containerd's default so
//! that `sudo`/`su` work in RUN). [`MASKED_PATHS`] and [`READONLY_PATHS`] follow Docker's default
//! spec. A small seccomp filter denies what capabilities leave open (the kernel keyring, new
//! user namespaces, bpf, perf, userfaultfd, ...); it is a deny-list, not Docker's full allow-list
//! profile. `insecure` keeps every capability, leaves `/sys` writable, masks nothing and installs
//! no filter. There are no cgroups: forge does not limit resources.
//!
//! Syscalls that build the sandbox go through the [`Syscall`] trait, so the setup sequence is
//! unit-tested with a recording fake; `tests/` runs the real thing.

mod cancel;
mod caps;
mod copy;
mod error;
mod etcfiles;
mod helper;
mod overlay;
mod paths;
mod process;
mod proto;
mod rootless;
mod runner;
mod seccomp;
mod setup;
mod spec;
mod stubs;
pub mod syscall;
mod user;

pub use cancel::CancelToken;
pub use caps::{cap, mask as capability_mask, DEFAULT_CAPABILITIES};
pub use copy::copy_tree;
pub use error::SandboxError;
pub use overlay::overlay_supported;
pub use process::DEFAULT_PATH;
pub use rootless::{enter_rootless_namespace_if_needed, ROOTLESS_ENV};
pub use runner::Sandbox;
pub use setup::{MASKED_PATHS, READONLY_PATHS};
pub use spec::{ExitStatus, Mount, MountKind, Network, OutputStream, Rootfs, RunSpec};
pub use syscall::{LinuxSyscall, Syscall};

/// `argv[1]` that turns a program into the sandbox helper.
pub const HELPER_ARG: &str = "__forge-sandbox";

/// Call first thing in `main()` of any program that runs sandboxes (the forge CLI, test
/// harnesses): when `argv[1]` is [`HELPER_ARG`], the process is a sandbox helper; this runs it
/// and exits. Otherwise it returns at once.
pub fn maybe_run_helper() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(HELPER_ARG)) {
        std::process::exit(helper::helper_main());
    }
}
