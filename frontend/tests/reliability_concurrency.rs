//! Concurrency on one store: eight `forge build`s at once sharing a base and cache keys give
//! the digests sequential builds give, and `forge prune --all` running next to builds never
//! removes anything a running build uses.

mod common;
mod reliability_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reliability_common::*;

const SDE: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// Eight variants: all share the base and the first RUN/COPY (same cache keys); each has its
/// own last step, so the builds both contend for shared records and write their own.
fn dockerfile(variant: usize) -> String {
    format!(
        "FROM busybox\n\
         RUN seq 1 100000 > /shared && echo shared > /marker\n\
         COPY data/ /data/\n\
         RUN cat /data/* | md5sum > /data.sum\n\
         RUN echo variant {variant} > /variant && seq {variant} 50000 > /mine\n\
         LABEL variant={variant}\n"
    )
}

fn contexts() -> Vec<TempDir> {
    (0..8)
        .map(|v| {
            let ctx = context(&[("Dockerfile", &dockerfile(v)), ("data/a", "")]);
            std::fs::write(ctx.path().join("data/a"), noise(1, 1 << 20)).unwrap();
            std::fs::write(ctx.path().join("data/b"), noise(2, 1 << 20)).unwrap();
            ctx
        })
        .collect()
}

fn build_cmd(f: &Forge, ctx: &Path, base: &Path, tag: &str) -> Command {
    let mut c = f.cmd();
    c.arg("build")
        .arg("--progress=plain")
        .arg("--build-context")
        .arg(format!("busybox=oci-layout://{}", base.display()))
        .args(["-t", tag])
        .arg(ctx)
        .env(SDE.0, SDE.1);
    c
}

fn digest_of(out: &std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed\n{err}");
    Progress::parse(&err).summary.unwrap_or_else(|| panic!("{what}: no summary\n{err}")).digest
}

#[test]
fn eight_concurrent_builds_match_sequential_digests() {
    let Some(base) = base_tar() else { return };
    let ctxs = contexts();

    // Sequential reference, in a store of its own.
    let seq = Forge::new();
    let want: Vec<String> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| digest_of(&build_cmd(&seq, c.path(), base, &format!("v:{i}")).output().unwrap(), "sequential build"))
        .collect();
    assert_eq!(
        want.iter().collect::<std::collections::BTreeSet<_>>().len(),
        8,
        "variants must differ: {want:?}"
    );

    // Two rounds on one fresh store: the first contends on a cold cache, the second on a warm one.
    let f = Forge::new();
    for round in 0..2 {
        let t0 = Instant::now();
        let children: Vec<_> = ctxs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut cmd = build_cmd(&f, c.path(), base, &format!("v:{i}"));
                cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        let got: Vec<String> = children
            .into_iter()
            .enumerate()
            .map(|(i, ch)| digest_of(&ch.wait_with_output().unwrap(), &format!("concurrent build {i} (round {round})")))
            .collect();
        eprintln!("round {round}: 8 concurrent builds in {:?}", t0.elapsed());
        assert_eq!(got, want, "round {round}: concurrent digests differ from sequential ones");
        for (i, d) in want.iter().enumerate() {
            let img = f.inspect(&format!("v:{i}"));
            assert_eq!(img["ManifestDigest"], d.as_str(), "tag v:{i} does not name {d}");
        }
        assert_store_clean(&f, &format!("concurrent round {round}"));
    }
}

#[test]
fn prune_during_builds_never_removes_what_they_use() {
    let Some(base) = base_tar() else { return };
    let ctxs = contexts();
    let f = Forge::new();
    let started = Instant::now();
    let mut builds = 0;
    let mut prunes = 0;
    // Three rounds: four staggered builds (cold cache each time, as prune --all dropped it)
    // while a loop prunes everything no tag holds, as fast as it can.
    for round in 0..3 {
        f.ok(&["prune", "--all"]);
        for i in 0..8 {
            let _ = f.run(&["rmi", &format!("v:{i}")]);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pruner = {
            let stop = stop.clone();
            let root = f.root();
            std::thread::spawn(move || {
                let mut n = 0;
                let mut failures = Vec::new();
                let t = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed() < Duration::from_secs(120) {
                    let o = Command::new(forge_bin()).arg("--root").arg(&root).args(["prune", "--all"]).output().unwrap();
                    if !o.status.success() {
                        failures.push(String::from_utf8_lossy(&o.stderr).into_owned());
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (n, failures)
            })
        };
        let children: Vec<_> = ctxs
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, c)| {
                // Staggered starts leave gaps in which a waiting prune gets the store: right
                // before one build starts and right after another one finishes.
                std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 400 + 300 * (i as u64 % 2) }));
                let mut cmd = build_cmd(&f, c.path(), base, &format!("v:{i}"));
                cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (n, failures) = pruner.join().unwrap();
        prunes += n;
        assert!(failures.is_empty(), "prune failed while builds ran: {failures:?}");
        for (i, o) in outs.iter().enumerate() {
            digest_of(o, &format!("build {i} next to prune (round {round})"));
            builds += 1;
            // What the build tagged is complete: every blob is there.
            f.inspect(&format!("v:{i}"));
        }
        assert_store_clean(&f, &format!("builds with concurrent prune, round {round}"));
        // The tagged images survive a further prune and still export completely.
        f.ok(&["prune", "--all"]);
        let out = f.scratch(&format!("r{round}.tar"));
        f.ok(&["save", "-o", &out.display().to_string(), "v:0", "v:1", "v:2", "v:3"]);
    }
    eprintln!("prune_during_builds: {builds} builds next to {prunes} prunes in {:?}", started.elapsed());
    assert!(prunes >= 3, "prune hardly ran ({prunes} times); the test did not overlap anything");
}
