//! Per-run overhead of the sandbox: runs `true` 50 times through `Sandbox::run` on a busybox
//! overlay rootfs (fresh upper directory each time) and prints the mean and median per run.
//!
//! ```text
//! sudo cargo run --release -p forge-sandbox --example bench_true
//! ```

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use forge_sandbox::{CancelToken, Rootfs, RunSpec, Sandbox};

const RUNS: usize = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    forge_sandbox::maybe_run_helper();
    forge_sandbox::enter_rootless_namespace_if_needed()?;

    let dir = tempfile::tempdir()?;
    let lower = dir.path().join("lower");
    // Laid out like a real base image: the mount-point directories exist.
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(lower.join(d))?;
    }
    std::fs::copy("/usr/bin/busybox", lower.join("bin/busybox"))?;
    for applet in ["sh", "true"] {
        symlink("busybox", lower.join("bin").join(applet))?;
    }

    let sandbox = Sandbox::new();
    let cancel = CancelToken::new();
    let mut times = Vec::with_capacity(RUNS);
    let mut cpu = Duration::ZERO;
    for i in 0..=RUNS {
        let upper = dir.path().join(format!("upper{i}"));
        let work = dir.path().join(format!("work{i}"));
        std::fs::create_dir(&upper)?;
        std::fs::create_dir(&work)?;
        let spec = RunSpec::new(
            Rootfs::Overlay {
                lower: vec![lower.clone()],
                upper,
                work,
            },
            vec!["true".into()],
        );
        let cpu_before = children_cpu();
        let start = Instant::now();
        let status = sandbox.run(&spec, &mut |_, _| {}, &cancel)?;
        let elapsed = start.elapsed();
        let cpu_used = children_cpu() - cpu_before;
        assert!(status.success(), "true failed: {status}");
        if i > 0 {
            // Run 0 warms the page cache.
            times.push(elapsed);
            cpu += cpu_used;
        }
    }
    times.sort();
    let total: Duration = times.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{RUNS} runs of `true`: mean {:.2} ms, median {:.2} ms, min {:.2} ms, max {:.2} ms per run; \
         CPU (helper + init + command, user + system) {:.2} ms per run",
        ms(total) / RUNS as f64,
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1]),
        ms(cpu) / RUNS as f64,
    );
    Ok(())
}

/// User + system time of all waited-for descendants (the helper includes init and the command).
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
