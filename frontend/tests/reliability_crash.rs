//! Crash consistency: `forge build`, `forge save`, `forge load` and `forge prune` are
//! SIGKILLed at random moments; afterwards the store must pass `forge check`, the next
//! build must succeed and reuse every step the killed build reported done, and nothing the
//! killed process started may outlive it.
//!
//! Bounded: at most `FORGE_REL_KILLS` (default 40) kill rounds for builds and a time budget
//! (`FORGE_REL_SECS`, default 110 s),
//! so the suite stays within a couple of minutes on two cores.

mod common;
mod reliability_common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use reliability_common::*;

const DOCKERFILE: &str = "\
FROM busybox
ARG ROUND
RUN echo \"round $ROUND\" > /round && seq 1 50000 > /numbers
COPY big/ /big/
RUN cat /big/* /numbers | md5sum > /sum && cp /numbers /numbers2
LABEL round=$ROUND
";

fn crash_context() -> TempDir {
    let ctx = context(&[("Dockerfile", DOCKERFILE)]);
    std::fs::create_dir_all(ctx.path().join("big")).unwrap();
    for i in 0..4u64 {
        std::fs::write(ctx.path().join(format!("big/f{i}")), noise(i + 7, 256 << 10)).unwrap();
    }
    ctx
}

fn build_args<'a>(ctx: &'a Path, base: &'a str, round: &'a str) -> Vec<String> {
    vec![
        "build".into(),
        "--progress=plain".into(),
        "--build-context".into(),
        format!("busybox=oci-layout://{base}"),
        "--build-arg".into(),
        format!("ROUND={round}"),
        "-t".into(),
        "crash:latest".into(),
        ctx.display().to_string(),
    ]
}

fn kill_budget() -> usize {
    std::env::var("FORGE_REL_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
}

#[test]
fn killed_builds_leave_a_consistent_store_and_reusable_cache() {
    let Some(base) = base_tar() else { return };
    let base = base.display().to_string();
    let f = Forge::new();
    let ctx = crash_context();
    let mut rng = Rng::new("killed_builds");
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];

    // A reference build measures how long a cold build takes; kill delays are spread over
    // most of that span, so kills land in the base import, both RUNs, the COPY of
    // 1 MB, layer compression, record writes and the tag update.
    let t0 = Instant::now();
    let first = f.cmd().args(build_args(ctx.path(), &base, "ref")).envs(sde).output().unwrap();
    assert!(first.status.success(), "reference build failed:\n{}", String::from_utf8_lossy(&first.stderr));
    let cold = t0.elapsed();
    eprintln!("cold build took {cold:?}");
    // Later rounds find the base imported already and run faster than this first one.
    let span_ms = (cold.as_millis() as u64 * 7 / 10).max(200);

    let budget = Duration::from_secs(std::env::var("FORGE_REL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(110));
    let started = Instant::now();
    let (mut kills, mut finished_first, mut reused_steps, mut leftovers_seen) = (0usize, 0usize, 0usize, 0usize);
    let logs = f.scratch("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for round in 0..kill_budget() {
        if started.elapsed() > budget {
            eprintln!("time budget reached after {round} rounds");
            break;
        }
        let tag = format!("r{round}");
        // Every fifth round starts from an empty cache, so kills also hit the base import.
        if round % 5 == 4 {
            f.ok(&["prune", "--all"]);
        }
        let log = logs.join(format!("{tag}.log"));
        let args = build_args(ctx.path(), &base, &tag);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = spawn(&f, &argv, &sde, &log);
        let delay = Duration::from_millis(rng.below(span_ms));
        let fate = kill_after(child, delay);
        let killed_log = std::fs::read_to_string(&log).unwrap_or_default();
        match fate {
            Fate::Exited(code) => {
                assert_eq!(code, 0, "round {tag}: unkilled build failed:\n{killed_log}");
                finished_first += 1;
            }
            Fate::Killed { leftovers } => {
                kills += 1;
                leftovers_seen += leftovers;
                assert_eq!(
                    leftovers, 0,
                    "round {tag}: {leftovers} processes outlived the killed forge (at {delay:?})\n{killed_log}"
                );
            }
        }
        assert_store_clean(&f, &format!("round {tag} ({fate:?} at {delay:?})"));

        // The next build succeeds and reuses every step the killed one finished.
        let before = Progress::parse(&killed_log);
        let again = f.cmd().args(&args).envs(sde).output().unwrap();
        let again_err = String::from_utf8_lossy(&again.stderr).into_owned();
        assert!(
            again.status.success(),
            "round {tag}: build after kill failed:\n{again_err}\n--- killed build's log\n{killed_log}"
        );
        let after = Progress::parse(&again_err);
        for s in before.steps.iter().filter(|s| s.done && !s.is_from()) {
            let same = after.step(s.instruction());
            assert!(
                same.cached,
                "round {tag}: step {:?} finished before the kill but ran again\n{again_err}\n--- killed\n{killed_log}",
                s.name
            );
            reused_steps += 1;
        }
        if round % 4 == 3 {
            assert_store_clean(&f, &format!("the rebuild of round {tag}"));
        }
        // And the image the tag names is complete and loadable.
        let img = f.inspect("crash:latest");
        assert_eq!(img["Config"]["config"]["Labels"]["round"], tag.as_str(), "round {tag}: crash:latest does not name this round's image");
    }
    eprintln!(
        "killed_builds: {kills} kills, {finished_first} builds finished before their kill time, {reused_steps} completed steps reused, {leftovers_seen} leftover processes, in {:?}",
        started.elapsed()
    );
    assert!(kills >= 5, "only {kills} builds were actually killed; the harness is not testing anything");

    // Determinism survives the kills: a cold rebuild of one round equals its cached result.
    let args = build_args(ctx.path(), &base, "final");
    let a = f.cmd().args(&args).envs(sde).output().unwrap();
    assert!(a.status.success());
    f.ok(&["prune", "--all"]);
    let b = f.cmd().args(&args).envs(sde).output().unwrap();
    assert!(b.status.success());
    let da = Progress::parse(&String::from_utf8_lossy(&a.stderr)).summary.unwrap().digest;
    let db = Progress::parse(&String::from_utf8_lossy(&b.stderr)).summary.unwrap().digest;
    assert_eq!(da, db, "the same build gave different digests before and after pruning");
    assert_store_clean(&f, "the final builds");
}

#[test]
fn killed_save_load_and_prune_leave_a_consistent_store() {
    let Some(base) = base_tar() else { return };
    let base = base.display().to_string();
    let f = Forge::new();
    let ctx = crash_context();
    let mut rng = Rng::new("killed_save_load_prune");
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let args = build_args(ctx.path(), &base, "saved");
    let b = f.cmd().args(&args).envs(sde).output().unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let want = f.inspect("crash:latest");
    assert!(want["ManifestDigest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "inspect has no ManifestDigest: {want}");

    let logs = f.scratch("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let tar = f.scratch("saved.tar");
    let tar_s = tar.display().to_string();
    // A complete archive first, to load from. The first save also compresses the build's plain
    // layers (remembered in the store), and the first load unpacks them; the operations killed
    // below repeat them, so a repetition of each is what is timed for the kill windows.
    f.ok(&["save", "-o", &tar_s, "crash:latest"]);
    let t0 = Instant::now();
    f.ok(&["save", "-o", &f.scratch("timed.tar").display().to_string(), "crash:latest"]);
    let save_ms = (t0.elapsed().as_millis() as u64).max(50);
    let f2 = Forge::new();
    f2.ok(&["load", "-i", &tar_s]);
    let t0 = Instant::now();
    f2.ok(&["load", "-i", &tar_s]);
    let load_ms = (t0.elapsed().as_millis() as u64).max(50);
    eprintln!("save {save_ms} ms, load {load_ms} ms");
    // The saved image: the build's config, with its plain layers compressed by `save`.
    let want = f2.inspect("crash:latest");
    assert_eq!(want["Id"], f.inspect("crash:latest")["Id"], "save changed the image config");

    let started = Instant::now();
    let (mut kills, mut rounds) = (0, 0);
    for round in 0..10 {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        rounds += 1;
        // save into a fresh path: a killed save must not leave a file that looks complete.
        let out = f.scratch(&format!("partial-{round}.tar"));
        let out_s = out.display().to_string();
        let child = spawn(&f, &["save", "-o", &out_s, "crash:latest"], &[], &logs.join("save.log"));
        if let Fate::Killed { leftovers } = kill_after(child, Duration::from_millis(rng.below(save_ms))) {
            kills += 1;
            assert_eq!(leftovers, 0);
            if out.exists() {
                // Whatever is there must either load completely or be refused.
                let probe = Forge::new();
                let o = probe.run(&["load", "-i", &out_s]);
                if o.code == 0 {
                    assert_eq!(
                        probe.inspect("crash:latest")["ManifestDigest"],
                        want["ManifestDigest"],
                        "a killed save left a different image"
                    );
                }
                assert_store_clean(&probe, "loading a partial save");
            }
        }
        assert_store_clean(&f, &format!("killed save {round}"));

        // load into the second store, killed midway; then a full load must work.
        let child = spawn(&f2, &["load", "-i", &tar_s], &[], &logs.join("load.log"));
        if let Fate::Killed { leftovers } = kill_after(child, Duration::from_millis(rng.below(load_ms))) {
            kills += 1;
            assert_eq!(leftovers, 0);
        }
        assert_store_clean(&f2, &format!("killed load {round}"));
        f2.ok(&["load", "-i", &tar_s]);
        assert_eq!(f2.inspect("crash:latest")["ManifestDigest"], want["ManifestDigest"]);

        // prune of the second store, killed midway (after an rmi, so it has work to do).
        f2.ok(&["rmi", "crash:latest"]);
        let child = spawn(&f2, &["prune", "--all"], &[], &logs.join("prune.log"));
        if let Fate::Killed { leftovers } = kill_after(child, Duration::from_millis(rng.below(80))) {
            kills += 1;
            assert_eq!(leftovers, 0);
        }
        assert_store_clean(&f2, &format!("killed prune {round}"));
        f2.ok(&["load", "-i", &tar_s]);
        assert_eq!(f2.inspect("crash:latest")["ManifestDigest"], want["ManifestDigest"]);
        assert_store_clean(&f2, &format!("reload after killed prune {round}"));
    }
    eprintln!("killed_save_load_prune: {rounds} rounds, {kills} kills in {:?}", started.elapsed());
    assert!(kills >= 3, "only {kills} operations were killed");
    // The source store still builds from cache after all of it.
    let again = f.cmd().args(&args).envs(sde).output().unwrap();
    assert!(again.status.success());
    let p = Progress::parse(&String::from_utf8_lossy(&again.stderr));
    assert!(p.ran().is_empty(), "steps ran again after save kills: {:?}", p.ran());
}
