//! Sandbox escape attempts, as RUN steps with the default capabilities: each must fail.
//!
//! One build runs a probe script (busybox shell) and, when a C compiler with a static libc
//! is present, a small static probe program that tries the raw system calls (ptrace,
//! init_module, mount, mknod + read of the host disk, open_by_handle_at, sysrq). Every
//! probe prints `blocked <name> …` or `ESCAPED <name> …`; the test reads the results back
//! from the exported root filesystem. Positive controls make sure the probes really ran.

mod common;
mod reliability_common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, int escaped) {
    if (escaped) printf("ESCAPED %s\n", name);
    else printf("blocked %s (%s)\n", name, strerror(errno));
    fflush(stdout);
}

int main(int argc, char **argv) {
    unsigned maj = argc > 1 ? strtoul(argv[1], 0, 0) : 8, min = argc > 2 ? strtoul(argv[2], 0, 0) : 0;
    int host_pid = argc > 3 ? atoi(argv[3]) : 1;

    report("ptrace-pid1", ptrace(PTRACE_ATTACH, 1, 0, 0) == 0);
    errno = 0;
    report("ptrace-host-pid", ptrace(PTRACE_ATTACH, host_pid, 0, 0) == 0);
    errno = 0;
    report("kill-host-pid", host_pid > 1 && kill(host_pid, 0) == 0);

    static const char blob[64] = "\177ELF";
    report("init_module", syscall(SYS_init_module, blob, sizeof blob, "") == 0);
    int fd = open("/bin/busybox", O_RDONLY);
    report("finit_module", syscall(SYS_finit_module, fd, "", 0) == 0);

    mkdir("/tmp/m", 0755);
    report("mount-tmpfs", mount("none", "/tmp/m", "tmpfs", 0, "") == 0);
    report("mount-proc", mount("proc", "/tmp/m", "proc", 0, "") == 0);
    report("bind-remount-root-rw", mount("/", "/tmp/m", 0, MS_BIND | MS_REC, 0) == 0);
    report("umount-proc", umount2("/proc", MNT_DETACH) == 0);

    int made = mknod("/tmp/hostdisk", S_IFBLK | 0600, makedev(maj, min)) == 0;
    char buf[512];
    int dfd = made ? open("/tmp/hostdisk", O_RDONLY) : -1;
    report("read-host-disk", dfd >= 0 && read(dfd, buf, sizeof buf) == (ssize_t)sizeof buf);
    made = mknod("/tmp/kmem", S_IFCHR | 0600, makedev(1, 2)) == 0;
    dfd = made ? open("/tmp/kmem", O_RDONLY) : -1;
    report("open-kmem", dfd >= 0);

    int s = open("/proc/sysrq-trigger", O_WRONLY);
    report("write-sysrq-trigger", s >= 0 && write(s, "h", 1) == 1); /* 'h' only prints help */

    struct { unsigned int bytes; int type; unsigned char f[128]; } h = { 128, 0 };
    int mount_id;
    if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &h, &mount_id, 0) != 0) {
        /* The "shocker" handle: inode 2 (an ext4 root) with generation 0. */
        memset(&h, 0, sizeof h);
        h.bytes = 8;
        h.type = 1;
        h.f[0] = 2;
    }
    int root = open("/", O_RDONLY | O_DIRECTORY);
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, root, &h, O_RDONLY) >= 0);

    report("reboot-cad-off", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x00000000 /* CAD_OFF */, 0) == 0);
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0) == 0);
    printf("control probe-ran\n");
    return 0;
}
"#;

/// The probe script. `{MARKER}` names a file in the host's /tmp; `{HOSTPID}` a host pid.
const PROBE_SH: &str = r#"
r() { if [ "$2" = yes ]; then echo "ESCAPED $1 $3"; else echo "blocked $1"; fi; }
# host paths
if cat /tmp/{MARKER} 2>/dev/null; then r host-tmp-marker yes; else r host-tmp-marker no; fi
found=$(find / -path /proc -prune -o -path /sys -prune -o -name '{MARKER}' -print 2>/dev/null)
if [ -n "$found" ]; then r host-marker-anywhere yes "$found"; else r host-marker-anywhere no; fi
if ls /proc/1/root/work >/dev/null 2>&1 || ls /proc/1/cwd/work >/dev/null 2>&1; then r host-root-via-proc yes; else r host-root-via-proc no; fi
# host processes
n=$(ls -d /proc/[0-9]* | wc -l)
echo "control pids $n"
if cat /proc/[0-9]*/comm 2>/dev/null | grep -qE '^(dockerd|containerd|cargo|rustc|systemd)$'; then r host-processes yes "$(cat /proc/[0-9]*/comm | sort -u | tr '\n' ' ')"; else r host-processes no; fi
if [ -e /proc/{HOSTPID} ]; then r host-pid-visible yes; else r host-pid-visible no; fi
# network (this step runs with --network=none)
ifs=$(ls /sys/class/net 2>/dev/null | tr '\n' ' ')
devs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
echo "control netdevs [$devs] sysfs [$ifs]"
if [ "$devs" = "lo " ]; then r host-network no; else r host-network yes "$devs"; fi
# mounts
echo "control mountpoints $(cut -d' ' -f5 /proc/self/mountinfo | sort -u | tr '\n' ' ')"
# kernel modules, mount, devices, sysrq through the shell tools
echo x > /tmp/fake.ko
if insmod /tmp/fake.ko 2>/dev/null; then r insmod yes; else r insmod no; fi
if mount -t tmpfs none /mnt 2>/dev/null; then r mount-shell yes; else r mount-shell no; fi
if echo h > /proc/sysrq-trigger 2>/dev/null; then r sysrq-shell yes; else r sysrq-shell no; fi
if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; then r write-proc-sys yes; else r write-proc-sys no; fi
if mknod /tmp/disk b {MAJ} {MIN} 2>/dev/null && head -c 512 /tmp/disk >/dev/null 2>&1; then r read-host-disk-shell yes; else r read-host-disk-shell no; fi
if touch /sys/kernel/forge-probe 2>/dev/null || echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null; then r write-sys yes; else r write-sys no; fi
grep -E '^Cap(Eff|Bnd)' /proc/self/status | sed 's/^/control /'
if [ -x /probe ]; then /probe {MAJ} {MIN} {HOSTPID}; fi
echo "control script-ran"
"#;

/// Capability bits that must be absent from the RUN's effective and bounding sets.
const FORBIDDEN_CAPS: &[(u32, &str)] =
    &[(16, "CAP_SYS_MODULE"), (17, "CAP_SYS_RAWIO"), (19, "CAP_SYS_PTRACE"), (21, "CAP_SYS_ADMIN"), (22, "CAP_SYS_BOOT"), (2, "CAP_DAC_READ_SEARCH"), (25, "CAP_SYS_TIME"), (12, "CAP_NET_ADMIN")];

fn host_root_disk() -> (u32, u32) {
    // The device of the filesystem this test runs on: the disk an escape would read.
    let dev = std::fs::metadata("/").unwrap().dev();
    let (maj, min) = (((dev >> 8) & 0xfff) as u32, ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32);
    // An overlay or virtual root has major 0; fall back to the first real block device.
    if maj != 0 {
        return (maj, min);
    }
    for d in ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda"] {
        if let Ok(m) = std::fs::metadata(d) {
            let r = m.rdev();
            return (((r >> 8) & 0xfff) as u32, ((r & 0xff) | ((r >> 12) & 0xfff00)) as u32);
        }
    }
    (8, 0)
}

fn compile_probe(dir: &Path) -> bool {
    let Some(gcc) = ["/usr/bin/gcc", "/usr/bin/cc"].iter().map(Path::new).find(|p| p.is_file()) else {
        skip_or_fail("gcc (for the static syscall probe)");
        return false;
    };
    std::fs::write(dir.join("probe.c"), PROBE_C).unwrap();
    let o = run_cmd(Command::new(gcc).args(["-static", "-O1", "-o"]).arg(dir.join("probe")).arg(dir.join("probe.c")));
    std::fs::remove_file(dir.join("probe.c")).unwrap();
    if o.code != 0 {
        skip_or_fail(&format!("a static libc for gcc -static ({})", o.stderr.lines().next().unwrap_or("")));
        return false;
    }
    true
}

#[test]
fn run_steps_cannot_escape_the_sandbox() {
    let Some(f) = Forge::with_base() else { return };
    let marker = format!("forge-rel-marker-{}", std::process::id());
    let marker_path = Path::new("/tmp").join(&marker);
    std::fs::write(&marker_path, "host secret marker").unwrap();
    let host_pid = std::process::id().to_string();
    let (maj, min) = host_root_disk();
    let script = PROBE_SH.replace("{MARKER}", &marker).replace("{HOSTPID}", &host_pid).replace("{MAJ}", &maj.to_string()).replace("{MIN}", &min.to_string());
    let ctx = context(&[("probe.sh", &script)]);
    let have_probe = compile_probe(ctx.path());
    let copy_probe = if have_probe { "COPY probe /probe\n" } else { "" };
    let df = format!("FROM {BASE}\nCOPY probe.sh /probe.sh\n{copy_probe}RUN --network=none sh /probe.sh > /results 2>&1\n");
    write_files(ctx.path(), &[("Dockerfile", &df)]);
    let dest = f.scratch("rootfs");
    let b = f.build(ctx.path(), &["-o".to_string(), format!("type=local,dest={}", dest.display())]);
    let _ = std::fs::remove_file(&marker_path);
    let results = std::fs::read_to_string(dest.join("results")).unwrap_or_else(|e| panic!("no /results ({e})\n{}", b.out.stderr));
    eprintln!("--- probe results\n{results}");

    assert!(results.contains("control script-ran"), "the probe script did not finish:\n{results}");
    if have_probe {
        assert!(results.contains("control probe-ran"), "the syscall probe did not run:\n{results}");
    }
    let escaped: Vec<&str> = results.lines().filter(|l| l.starts_with("ESCAPED")).collect();
    let blocked = results.lines().filter(|l| l.starts_with("blocked")).count();
    eprintln!("{blocked} escape attempts blocked, {} escaped", escaped.len());
    assert!(escaped.is_empty(), "sandbox escapes:\n{}\n--- all results\n{results}", escaped.join("\n"));
    // 12 shell probes, plus 15 from the syscall probe.
    let want = if have_probe { 27 } else { 12 };
    assert_eq!(blocked + escaped.len(), want, "not every probe reported:\n{results}");

    // Only the sandbox's own few processes are visible.
    let pids: usize = results.lines().find_map(|l| l.strip_prefix("control pids ")).and_then(|n| n.trim().parse().ok()).unwrap();
    assert!(pids <= 8, "the RUN step sees {pids} processes:\n{results}");

    // No capability an escape needs, neither effective nor in the bounding set.
    for line in results.lines().filter_map(|l| l.strip_prefix("control Cap")) {
        let (which, hex) = line.split_once(':').unwrap();
        let mask = u64::from_str_radix(hex.trim(), 16).unwrap();
        for (bit, name) in FORBIDDEN_CAPS {
            assert_eq!(mask & (1 << bit), 0, "Cap{which} holds {name}: {line}");
        }
    }

    // None of the host's own mount points (beyond the usual pseudo filesystems) is visible.
    let host_mounts: BTreeSet<String> =
        std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter_map(|l| l.split(' ').nth(4).map(str::to_string)).collect();
    let inside: BTreeSet<String> =
        results.lines().find_map(|l| l.strip_prefix("control mountpoints ")).unwrap().split_whitespace().map(str::to_string).collect();
    let allowed = |m: &str| {
        m == "/" || m.starts_with("/proc") || m.starts_with("/dev") || m.starts_with("/sys") || m.starts_with("/etc/") || m.starts_with("/run") || m == "/tmp"
    };
    let leaked: Vec<&String> = inside.iter().filter(|m| host_mounts.contains(*m) && !allowed(m)).collect();
    assert!(leaked.is_empty(), "host mount points visible in the sandbox: {leaked:?}\ninside: {inside:?}");
    let odd: Vec<&String> = inside.iter().filter(|m| !allowed(m)).collect();
    assert!(odd.is_empty(), "unexpected mount points in the sandbox: {odd:?}");
}

#[test]
fn insecure_security_mode_needs_the_entitlement() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("Dockerfile", &format!("FROM {BASE}\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n"))]);
    let b = f.try_build(ctx.path(), &[] as &[&str]);
    assert_ne!(b.out.code, 0, "RUN --security=insecure ran without --allow security.insecure");
    assert!(b.out.stderr.contains("security.insecure"), "the error does not name the entitlement:\n{}", b.out.stderr);
    // Nothing ran: no step reported done.
    assert!(b.progress.ran().is_empty(), "steps ran: {:?}", b.progress.ran());

    // Without the RUN flag, --allow alone changes nothing (default capabilities).
    let ctx2 = context(&[("Dockerfile", &format!("FROM {BASE}\nRUN grep CapEff /proc/self/status > /caps\n"))]);
    let dest = f.scratch("plain");
    f.build(ctx2.path(), &["--allow".to_string(), "security.insecure".to_string(), "-o".to_string(), format!("type=local,dest={}", dest.display())]);
    let caps = std::fs::read_to_string(dest.join("caps")).unwrap();
    let mask = u64::from_str_radix(caps.split(':').nth(1).unwrap().trim(), 16).unwrap();
    assert_eq!(mask & (1 << 21), 0, "a RUN without --security=insecure got CAP_SYS_ADMIN: {caps}");

    // With the entitlement the insecure step runs, with more capabilities than the default.
    let dest = f.scratch("insecure");
    let b = f.try_build(ctx.path(), &["--allow".to_string(), "security.insecure".to_string(), "-o".to_string(), format!("type=local,dest={}", dest.display())]);
    assert_eq!(b.out.code, 0, "RUN --security=insecure with --allow security.insecure failed:\n{}", b.out.stderr);
    let caps = std::fs::read_to_string(dest.join("caps")).unwrap();
    let mask = u64::from_str_radix(caps.split(':').nth(1).unwrap().trim(), 16).unwrap();
    assert_ne!(mask & (1 << 21), 0, "RUN --security=insecure did not get CAP_SYS_ADMIN: {caps}");
}
