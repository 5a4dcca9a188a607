//! A small seccomp filter: the part of Docker's default profile that capabilities do not
//! already cover.
//!
//! Docker's profile is an allow-list of ~350 system calls per architecture; most of what it
//! forbids is also forbidden by the dropped capabilities (mount, module loading, reboot, clock
//! setting, ...). What remains reachable without capabilities, and is therefore denied here:
//!
//! * the kernel keyring (`keyctl`, `add_key`, `request_key`), which is not namespaced;
//! * new user namespaces (`unshare`/`clone` with `CLONE_NEWUSER`), which would hand the command
//!   a fresh set of capabilities over namespaces it creates; `clone3` answers `ENOSYS`, because
//!   its flags live in memory a filter cannot read, and libc then falls back to `clone`;
//! * `perf_event_open`, `bpf`, `userfaultfd`, `lookup_dcookie`, `quotactl`, `uselib` and the
//!   kexec/module/swap/accounting/clock calls, for defence in depth;
//! * on x86_64, the x32 system call table (a second copy of every call that could slip past).
//!
//! Denied calls fail with `EPERM`. The filter checks the native architecture only; system calls
//! of another ABI (32-bit x86 binaries on x86_64) pass unfiltered. `insecure` runs install no
//! filter.

use std::io;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Low 32 bits of `args[0]` (little-endian).
const OFFSET_ARG0: u32 = 16;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_SYSCALL_BIT: Option<u32> = None;

/// System calls denied outright.
fn denied() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_perf_event_open,
        libc::SYS_bpf,
        libc::SYS_userfaultfd,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_open_by_handle_at,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_uselib, libc::SYS_iopl, libc::SYS_ioperm]);
    calls
}

#[derive(Clone, Copy)]
enum Target {
    Allow,
    Eperm,
    Enosys,
    CheckFlags,
}

enum Insn {
    Load(u32),
    JumpIfEq(u32, Target),
    JumpIfGe(u32, Target),
    JumpIfSet(u32, Target),
    Ret(u32),
    Label(Target),
}

fn ret_value(t: Target) -> u32 {
    match t {
        Target::Allow => SECCOMP_RET_ALLOW,
        Target::Eperm => SECCOMP_RET_ERRNO | libc::EPERM as u32,
        Target::Enosys => SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        Target::CheckFlags => unreachable!("not a return"),
    }
}

/// The filter program.
pub(crate) fn default_filter() -> Vec<libc::sock_filter> {
    use Insn::*;
    let mut body = vec![Load(OFFSET_NR)];
    if let Some(bit) = X32_SYSCALL_BIT {
        body.push(JumpIfGe(bit, Target::Enosys));
    }
    for nr in denied() {
        body.push(JumpIfEq(nr as u32, Target::Eperm));
    }
    body.push(JumpIfEq(libc::SYS_clone3 as u32, Target::Enosys));
    body.push(JumpIfEq(libc::SYS_unshare as u32, Target::CheckFlags));
    body.push(JumpIfEq(libc::SYS_clone as u32, Target::CheckFlags));
    body.push(Ret(SECCOMP_RET_ALLOW));
    body.push(Label(Target::CheckFlags));
    body.push(Load(OFFSET_ARG0));
    body.push(JumpIfSet(libc::CLONE_NEWUSER as u32, Target::Eperm));
    body.push(Ret(SECCOMP_RET_ALLOW));
    for t in [Target::Eperm, Target::Enosys] {
        body.push(Label(t));
        body.push(Ret(ret_value(t)));
    }
    // Arch check: native → the body; any other ABI → the final ALLOW (see the module doc).
    let mut all = vec![Load(OFFSET_ARCH)];
    all.push(JumpIfEq(NATIVE_ARCH, Target::Allow));
    all.extend(body);
    all.push(Label(Target::Allow));
    all.push(Ret(SECCOMP_RET_ALLOW));
    assemble(&all)
}

/// Resolves labels into forward jump offsets.
fn assemble(insns: &[Insn]) -> Vec<libc::sock_filter> {
    let mut positions = Vec::new();
    let mut pc = 0usize;
    for insn in insns {
        match insn {
            Insn::Label(t) => positions.push((*t as u8, pc)),
            _ => pc += 1,
        }
    }
    let label_at = |t: Target, from: usize| -> u8 {
        let (_, at) = positions
            .iter()
            .find(|(l, at)| *l == t as u8 && *at > from)
            .expect("forward label");
        u8::try_from(at - from - 1).expect("jump fits in 8 bits")
    };
    let mut out = Vec::new();
    for insn in insns {
        let pc = out.len();
        let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        match *insn {
            Insn::Label(_) => continue,
            Insn::Load(off) => out.push(f(BPF_LD_W_ABS, 0, 0, off)),
            Insn::Ret(v) => out.push(f(BPF_RET_K, 0, 0, v)),
            // The arch check is the only jump to Allow whose "true" branch falls through.
            Insn::JumpIfEq(k, Target::Allow) => {
                out.push(f(BPF_JEQ_K, 0, label_at(Target::Allow, pc), k))
            }
            Insn::JumpIfEq(k, t) => out.push(f(BPF_JEQ_K, label_at(t, pc), 0, k)),
            Insn::JumpIfGe(k, t) => out.push(f(BPF_JGE_K, label_at(t, pc), 0, k)),
            Insn::JumpIfSet(k, t) => out.push(f(BPF_JSET_K, label_at(t, pc), 0, k)),
        }
    }
    out
}

/// Installs `program` for the calling thread (needs `CAP_SYS_ADMIN` or `no_new_privs`).
pub(crate) fn install(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    crate::syscall::check(unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic-BPF program (the subset assembled above) on one system call.
    fn eval(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        OFFSET_NR => nr,
                        OFFSET_ARCH => arch,
                        OFFSET_ARG0 => arg0,
                        k => panic!("load from offset {k}"),
                    }
                }
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                BPF_JSET_K => pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    const ALLOW: u32 = SECCOMP_RET_ALLOW;
    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn filter_decisions() {
        let p = default_filter();
        let call = |nr: libc::c_long, arg0: i32| eval(&p, NATIVE_ARCH, nr as u32, arg0 as u32);
        assert_eq!(call(libc::SYS_read, 0), ALLOW);
        assert_eq!(call(libc::SYS_execve, 0), ALLOW);
        assert_eq!(call(libc::SYS_keyctl, 0), EPERM);
        assert_eq!(call(libc::SYS_add_key, 0), EPERM);
        assert_eq!(call(libc::SYS_bpf, 0), EPERM);
        assert_eq!(call(libc::SYS_clone3, 0), ENOSYS);
        assert_eq!(call(libc::SYS_unshare, libc::CLONE_NEWUSER), EPERM);
        assert_eq!(
            call(libc::SYS_unshare, libc::CLONE_NEWNS | libc::CLONE_NEWUSER),
            EPERM
        );
        assert_eq!(call(libc::SYS_unshare, libc::CLONE_NEWNS), ALLOW);
        assert_eq!(call(libc::SYS_clone, libc::SIGCHLD), ALLOW);
        assert_eq!(
            call(libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD),
            EPERM
        );
        // Another ABI is not filtered.
        assert_eq!(eval(&p, 0x4000_0003, libc::SYS_keyctl as u32, 0), ALLOW);
        for nr in denied() {
            assert_eq!(call(nr, 0), EPERM, "syscall {nr}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_refused() {
        let p = default_filter();
        assert_eq!(
            eval(&p, NATIVE_ARCH, 0x4000_0000 | libc::SYS_keyctl as u32, 0),
            ENOSYS
        );
    }
}
