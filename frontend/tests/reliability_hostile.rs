//! Hostile inputs: contexts with symlinks out of the context, archives that try to write
//! outside the image, huge or deeply nested Dockerfiles, OCI layouts whose descriptors lie.
//! Each is refused with a clear error or contained, without a panic and without any effect
//! outside forge's own directories.

mod common;
mod reliability_common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use reliability_common::*;

/// A forge process must not die of a panic or a signal: exit 0 (done) or 1/2 (refused).
#[track_caller]
fn no_crash(o: &Out, what: &str) {
    assert!(
        matches!(o.code, 0..=2) && !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
        "{what}: forge crashed (exit {})\n--- stderr\n{}",
        o.code,
        &o.stderr[..o.stderr.len().min(4000)]
    );
}

/// Builds `ctx` with the shared base, exporting the root filesystem to a fresh directory.
fn build_local(f: &Forge, ctx: &Path, name: &str) -> (Out, PathBuf) {
    let dest = f.scratch(name);
    let base = base_tar().unwrap();
    let o = f.run(&[
        "build".as_ref(),
        "--progress=plain".as_ref(),
        "--build-context".as_ref(),
        format!("busybox=oci-layout://{}", base.display()).as_ref(),
        "-o".as_ref(),
        format!("type=local,dest={}", dest.display()).as_ref(),
        ctx.as_os_str(),
    ] as &[&std::ffi::OsStr]);
    (o, dest)
}

/// Host-side bait: a directory outside every context holding a file with unique bytes.
struct Bait {
    dir: TempDir,
    secret: Vec<u8>,
}

impl Bait {
    fn new() -> Bait {
        let dir = tempfile::Builder::new().prefix("forge-bait-").tempdir().unwrap();
        let secret = format!("HOST-ONLY-{}-{}", std::process::id(), dir.path().display()).into_bytes();
        std::fs::write(dir.path().join("hostfile"), &secret).unwrap();
        Bait { dir, secret }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// The bait directory holds exactly its one file, unchanged.
    #[track_caller]
    fn untouched(&self, what: &str) {
        let l = listing(self.path());
        assert_eq!(l, vec![PathBuf::from("hostfile")], "{what}: something was written outside the image: {l:?}");
        assert_eq!(
            std::fs::read(self.path().join("hostfile")).unwrap(),
            self.secret,
            "{what}: the host file changed"
        );
    }
}

#[test]
fn copy_never_reads_through_symlinks_out_of_the_context() {
    if base_tar().is_none() {
        return;
    }
    let bait = Bait::new();
    let f = Forge::new();
    let host = bait.path().join("hostfile");

    // 1. A symlink to a host file, copied by a wildcard and by its directory: it must arrive
    //    as a symlink (or not at all), never as the host file's bytes.
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY dir/ /dir/\nCOPY lplain /top/\n"), ("dir/ok", "fine")]);
    symlink(&host, ctx.path().join("dir/abs")).unwrap();
    symlink(
        "../../../../../../../../..".to_string() + &host.display().to_string(),
        ctx.path().join("dir/rel"),
    )
    .unwrap();
    symlink(&host, ctx.path().join("link1")).unwrap();
    std::fs::write(ctx.path().join("lplain"), "plain").unwrap();
    let (o, dest) = build_local(&f, ctx.path(), "sym1");
    no_crash(&o, "COPY of a directory holding outward symlinks");
    assert_eq!(o.code, 0, "copying symlinks as symlinks is allowed:\n{}", o.stderr);
    for l in ["dir/abs", "dir/rel"] {
        let m = std::fs::symlink_metadata(dest.join(l)).unwrap();
        assert!(m.file_type().is_symlink(), "{l} was not copied as a symlink");
    }
    let hits = find_bytes(&dest, &bait.secret);
    assert!(hits.is_empty(), "the image holds the host file's content: {hits:?}");
    let hits = find_bytes(&f.root(), &bait.secret);
    assert!(hits.is_empty(), "the store holds the host file's content: {hits:?}");

    // 2. The named source itself is a symlink out of the context (file and directory): forge
    //    must refuse, or copy only the link; never the host file. A wildcard match is a
    //    named source too.
    for (i, df) in ["FROM busybox\nCOPY l* /top/\n", 
        "FROM busybox\nCOPY x /x\n",
        "FROM busybox\nCOPY x /\n",
        "FROM busybox\nCOPY d/ /d/\n",
        "FROM busybox\nCOPY d/hostfile /h\n",
    ]
    .iter()
    .enumerate()
    {
        let ctx = context(&[("Dockerfile", df)]);
        symlink(&host, ctx.path().join("x")).unwrap();
        symlink(bait.path(), ctx.path().join("d")).unwrap();
        symlink(&host, ctx.path().join("link1")).unwrap();
        let (o, dest) = build_local(&f, ctx.path(), &format!("sym2-{i}"));
        no_crash(&o, df);
        if o.code == 0 {
            let hits = find_bytes(&dest, &bait.secret);
            assert!(hits.is_empty(), "{df:?}: the image holds the host file's content: {hits:?}\n{}", o.stderr);
        } else {
            assert!(
                o.stderr.contains("ERROR") || o.stderr.contains("error"),
                "{df:?}: refused without a clear error:\n{}",
                o.stderr
            );
        }
        eprintln!("{df:?}: exit {}", o.code);
    }
    // `COPY d/hostfile` goes through a symlinked directory pointing out of the context: it must fail.
    let ctx = context(&[("Dockerfile", "FROM busybox\nCOPY d/hostfile /h\n")]);
    symlink(bait.path(), ctx.path().join("d")).unwrap();
    let (o, _) = build_local(&f, ctx.path(), "sym3");
    assert_eq!(o.code, 1, "COPY through a symlink out of the context must fail:\n{}", o.stderr);
    assert!(find_bytes(&f.root(), &bait.secret).is_empty(), "the store holds the host file's content");
    bait.untouched("COPY with outward symlinks");
}

/// One ustar header + body. `kind`: b'0' file, b'2' symlink, b'1' hard link, b'5' directory.
fn tar_entry(name: &str, kind: u8, link: &str, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    assert!(name.len() <= 100 && link.len() <= 100, "keep test names short");
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(if kind == b'5' { b"0000755" } else { b"0000644" });
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(body);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = entries.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

#[test]
fn add_archives_cannot_write_outside_the_image() {
    if base_tar().is_none() {
        return;
    }
    let bait = Bait::new();
    let out = bait.path().display().to_string();
    let out_rel = out.trim_start_matches('/');
    let f = Forge::new();
    let deep = "../".repeat(12);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tar_of(&[
                tar_entry("ok", b'0', "", b"ok"),
                tar_entry(&format!("{deep}{out_rel}/pwned"), b'0', "", b"pwned"),
            ]),
        ),
        (
            "dotdot-middle",
            tar_of(&[tar_entry(&format!("a/../../{deep}{out_rel}/pwned2"), b'0', "", b"pwned")]),
        ),
        ("absolute", tar_of(&[tar_entry(&format!("{out}/abs-pwned"), b'0', "", b"pwned")])),
        (
            "symlink-then-write",
            tar_of(&[tar_entry("esc", b'2', &out, b""), tar_entry("esc/through-link", b'0', "", b"pwned")]),
        ),
        (
            "relative-symlink-then-write",
            tar_of(&[
                tar_entry("resc", b'2', &format!("{deep}{out_rel}"), b""),
                tar_entry("resc/through-rel-link", b'0', "", b"pwned"),
            ]),
        ),
        (
            "symlink-dir-chain",
            tar_of(&[
                tar_entry("a", b'5', "", b""),
                tar_entry("a/b", b'2', "../../../../../../..", b""),
                tar_entry(&format!("a/b/{out_rel}/chain"), b'0', "", b"pwned"),
            ]),
        ),
        ("hardlink-absolute", tar_of(&[tar_entry("hl", b'1', &format!("{out}/hostfile"), b"")])),
        ("hardlink-dotdot", tar_of(&[tar_entry("hl2", b'1', &format!("{deep}{out_rel}/hostfile"), b"")])),
        (
            "symlink-then-hardlink",
            tar_of(&[
                tar_entry("sl", b'2', &format!("{out}/hostfile"), b""),
                tar_entry("hl3", b'1', "sl", b""),
                tar_entry("hl3", b'0', "", b"overwrite"),
            ]),
        ),
        (
            "symlink-then-overwrite",
            tar_of(&[
                tar_entry("target", b'2', &format!("{out}/hostfile"), b""),
                tar_entry("target", b'0', "", b"overwritten"),
            ]),
        ),
    ];
    let mut refused = 0;
    for (name, bytes) in &cases {
        let df = format!("FROM busybox\nADD {name}.tar /unpacked/\nRUN ls -la /unpacked > /listing || true\n");
        let ctx = context(&[("Dockerfile", &df)]);
        std::fs::write(ctx.path().join(format!("{name}.tar")), bytes).unwrap();
        let (o, dest) = build_local(&f, ctx.path(), name);
        no_crash(&o, name);
        bait.untouched(name);
        if o.code == 0 {
            let hits = find_bytes(&dest, &bait.secret);
            assert!(hits.is_empty(), "{name}: the image holds the host file's content: {hits:?}");
            // Whatever was unpacked stays under /unpacked (names may be cleaned, never escape).
            for p in listing(&dest) {
                let s = p.display().to_string();
                assert!(!s.contains("pwned") || s.starts_with("unpacked/"), "{name}: {s} landed outside the destination");
            }
        } else {
            refused += 1;
            assert!(o.stderr.contains("ERROR"), "{name}: refused without a clear error:\n{}", o.stderr);
        }
        eprintln!("ADD {name}: exit {} {}", o.code, o.stderr.lines().find(|l| l.contains("ERROR")).unwrap_or(""));
    }
    assert!(find_bytes(&f.root(), &bait.secret).is_empty(), "the store holds the host file's content");
    bait.untouched("all ADD cases");
    eprintln!("ADD: {} hostile archives, {refused} refused, the rest contained", cases.len());
}

/// Like [`build_local`], but killed (and reported as a failure) after three minutes.
fn build_bounded(f: &Forge, ctx: &Path, name: &str) -> Out {
    let dest = f.scratch(name);
    let log = f.scratch(&format!("{name}.log"));
    let base = base_tar().unwrap();
    let args = [
        "build".to_string(),
        "--progress=plain".to_string(),
        "--build-context".to_string(),
        format!("busybox=oci-layout://{}", base.display()),
        "-o".to_string(),
        format!("type=local,dest={}", dest.display()),
        ctx.display().to_string(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn(f, &argv, &[], &log);
    let fate = kill_after(child, std::time::Duration::from_secs(180));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
    match fate {
        Fate::Exited(code) => Out { code, stdout: String::new(), stderr: text },
        Fate::Killed { .. } => panic!("{name}: forge build still running after 180 s\n{tail}"),
    }
}

/// Peak resident memory of all finished children so far, in KiB (getrusage RUSAGE_CHILDREN).
fn children_max_rss_kib() -> i64 {
    extern "C" {
        fn getrusage(who: i32, usage: *mut [i64; 18]) -> i32;
    }
    let mut u = [0i64; 18];
    unsafe { getrusage(-1, &mut u) };
    u[4] // two timevals (2×2 longs), then ru_maxrss
}

#[test]
fn huge_and_deeply_nested_dockerfiles_do_not_crash() {
    if base_tar().is_none() {
        return;
    }
    let f = Forge::new();
    let mut cases: Vec<(String, String)> = Vec::new();
    // 10k stages chained one on the next: the target depends on all of them.
    let mut chain = String::from("FROM busybox AS s0\n");
    for i in 1..10_000 {
        chain.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
    }
    chain.push_str("RUN echo end > /end\n");
    cases.push(("10k chained stages".into(), chain));
    // 10k independent stages, only the last one built.
    let mut wide = String::new();
    for i in 0..10_000 {
        wide.push_str(&format!("FROM busybox AS w{i}\nENV N={i}\n"));
    }
    cases.push(("10k independent stages".into(), wide));
    // 300 stages each copying from the previous one (COPY --from chain; every stage is a real
    // layer, so 10k of them would take minutes, not resources).
    let mut from_chain = String::from("FROM busybox AS c0\nRUN echo 0 > /n\n");
    for i in 1..300 {
        from_chain.push_str(&format!("FROM scratch AS c{i}\nCOPY --from=c{} /n /n\n", i - 1));
    }
    cases.push(("300-stage COPY --from chain".into(), from_chain));
    // A RUN continued over 100k lines, and one 8 MB line.
    let mut cont = String::from("FROM busybox\nRUN true");
    for _ in 0..100_000 {
        cont.push_str(" \\\n  && true");
    }
    cont.push('\n');
    cases.push(("100k continuation lines".into(), cont));
    cases.push(("8 MB line".into(), format!("FROM busybox\nLABEL x=\"{}\"\n", "y".repeat(8 << 20))));
    // Nested expansions and a long ONBUILD chain; ONBUILD ONBUILD must be refused.
    let nested = format!("FROM busybox\nARG A={}x{}\nRUN echo \"$A\" > /a\n", "${B:-".repeat(5_000), "}".repeat(5_000));
    cases.push(("5k nested ${:-} expansions".into(), nested));
    let mut onbuild = String::from("FROM busybox AS o0\nONBUILD LABEL l0=0\n");
    for i in 1..200 {
        onbuild.push_str(&format!("FROM o{} AS o{i}\nONBUILD LABEL l{i}={i}\n", i - 1));
    }
    onbuild.push_str("FROM o199\nRUN true\n");
    cases.push(("200 ONBUILD generations".into(), onbuild));
    cases.push(("ONBUILD ONBUILD".into(), "FROM busybox\nONBUILD ONBUILD RUN true\n".into()));
    cases.push((
        "30k-char heredoc delimiter".into(),
        format!("FROM busybox\nRUN <<{}\ntrue\n{}\n", "E".repeat(30_000), "E".repeat(30_000)),
    ));

    for (name, df) in &cases {
        let ctx = context(&[("Dockerfile", df.as_str())]);
        let before = children_max_rss_kib();
        let t0 = std::time::Instant::now();
        let o = build_bounded(&f, ctx.path(), &name.replace(' ', "_"));
        no_crash(&o, name);
        let after = children_max_rss_kib();
        eprintln!(
            "{name}: exit {} in {:?} (peak RSS so far {} MiB) {}",
            o.code,
            t0.elapsed(),
            after / 1024,
            o.stderr
                .lines()
                .find(|l| l.contains("ERROR") || l.starts_with("error"))
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>()
        );
        assert!(after < 3 << 20 || after == before, "{name}: forge used {} MiB", after / 1024);
        if o.code != 0 {
            assert!(o.stderr.contains("ERROR") || o.stderr.contains("error:"), "{name}: failed without a clear error");
        }
        if name == "ONBUILD ONBUILD" {
            assert_ne!(o.code, 0, "ONBUILD ONBUILD must be refused");
        }
    }
    // And `forge lint` on the largest ones (JSON: the table renderer finds each finding's
    // line by counting from the top, which is quadratic for 10k findings; see the report).
    for (name, df) in cases.iter().take(3) {
        let p = f.scratch(&format!("lint-{}.Dockerfile", name.len()));
        std::fs::write(&p, df).unwrap();
        let o = f.run(&["lint".as_ref(), "--format".as_ref(), "json".as_ref(), "-f".as_ref(), p.as_os_str()] as &[&std::ffi::OsStr]);
        no_crash(&o, &format!("lint {name}"));
        assert!(o.json().is_array(), "lint {name}: no JSON findings");
    }
    assert_store_clean(&f, "huge Dockerfiles");
}

/// Unpacks the shared base (an OCI layout tar) into a directory we can tamper with.
fn base_layout(dir: &Path) {
    let data = std::fs::read(base_tar().unwrap()).unwrap();
    for (name, body) in tar_members(&data) {
        if name.ends_with('/') {
            continue;
        }
        let p = dir.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    assert!(dir.join("index.json").is_file(), "the base tar is not an OCI layout");
}

fn sha256_hex(path: &Path) -> String {
    let o = run_cmd(std::process::Command::new("sha256sum").arg(path).stdout(Stdio::piped()));
    o.stdout.split_whitespace().next().unwrap().to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Rewrites a blob (JSON) and fixes the index so only the intended lie remains.
fn rewrite_manifest(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut index = json(&dir.join("index.json"));
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let mut m = json(&blob(dir, &mdigest));
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let np = dir.join("blobs/sha256/tmp");
    std::fs::write(&np, &bytes).unwrap();
    let hex = sha256_hex(&np);
    std::fs::rename(&np, dir.join("blobs/sha256").join(&hex)).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn lying_oci_layouts_are_refused_on_load() {
    if base_tar().is_none() {
        return;
    }
    type Lie = fn(&Path);
    let lies: Vec<(&str, Lie)> = vec![
        ("index says the manifest is smaller", |d| {
            let mut i = json(&d.join("index.json"));
            let s = i["manifests"][0]["size"].as_u64().unwrap();
            i["manifests"][0]["size"] = (s - 10).into();
            std::fs::write(d.join("index.json"), serde_json::to_vec(&i).unwrap()).unwrap();
        }),
        ("index says the manifest is larger", |d| {
            let mut i = json(&d.join("index.json"));
            let s = i["manifests"][0]["size"].as_u64().unwrap();
            i["manifests"][0]["size"] = (s + 4096).into();
            std::fs::write(d.join("index.json"), serde_json::to_vec(&i).unwrap()).unwrap();
        }),
        ("manifest blob content does not match its digest", |d| {
            let i = json(&d.join("index.json"));
            let p = blob(d, i["manifests"][0]["digest"].as_str().unwrap());
            let mut m = json(&p);
            m["annotations"] = serde_json::json!({"tampered": "yes"});
            std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
        }),
        ("layer size is a lie", |d| {
            rewrite_manifest(d, |m| {
                let s = m["layers"][0]["size"].as_u64().unwrap();
                m["layers"][0]["size"] = (s / 2).into();
            })
        }),
        ("layer size is enormous", |d| {
            rewrite_manifest(d, |m| m["layers"][0]["size"] = (1u64 << 50).into())
        }),
        ("layer bytes do not match the digest", |d| {
            let i = json(&d.join("index.json"));
            let m = json(&blob(d, i["manifests"][0]["digest"].as_str().unwrap()));
            let p = blob(d, m["layers"][0]["digest"].as_str().unwrap());
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n / 2] ^= 0xff;
            std::fs::write(&p, b).unwrap();
        }),
        ("config digest names another blob", |d| {
            rewrite_manifest(d, |m| {
                let l = m["layers"][0].clone();
                m["config"]["digest"] = l["digest"].clone();
                m["config"]["size"] = l["size"].clone();
            })
        }),
        ("layer digest points to a missing blob", |d| {
            rewrite_manifest(d, |m| m["layers"][0]["digest"] = format!("sha256:{}", "ab".repeat(32)).into())
        }),
        ("digest is a path traversal", |d| {
            rewrite_manifest(d, |m| m["layers"][0]["digest"] = "sha256:../../../../etc/passwd".into())
        }),
        ("negative size", |d| rewrite_manifest(d, |m| m["layers"][0]["size"] = (-1i64).into())),
    ];
    let mut refused = 0;
    let mut accepted = Vec::new();
    for (what, lie) in &lies {
        let dir = tempfile::tempdir().unwrap();
        base_layout(dir.path());
        lie(dir.path());
        let f = Forge::new();
        let o = f.run(&["load".as_ref(), "-i".as_ref(), dir.path().as_os_str()] as &[&std::ffi::OsStr]);
        no_crash(&o, what);
        if o.code == 0 {
            accepted.push(format!("forge load accepted: {what}"));
        } else {
            assert_eq!(o.code, 1, "{what}: {}", o.stderr);
            assert!(!o.stderr.trim().is_empty(), "{what}: refused without a message");
            assert!(f.run(&["inspect", BASE]).code != 0, "{what}: a tag was created for the refused image");
            refused += 1;
        }
        eprintln!("load, {what}: exit {} {}", o.code, o.stderr.trim().lines().last().unwrap_or(""));
        assert_store_clean(&f, what);
        // The same layout as a build context source is refused too.
        let f = Forge::new();
        let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
        let b = f.run(&[
            "build".as_ref(),
            "--progress=plain".as_ref(),
            "--build-context".as_ref(),
            format!("busybox=oci-layout://{}", dir.path().display()).as_ref(),
            ctx.path().as_os_str(),
        ] as &[&std::ffi::OsStr]);
        no_crash(&b, what);
        if b.code == 0 {
            accepted.push(format!("build --build-context oci-layout:// accepted: {what}"));
        }
        eprintln!("build, {what}: exit {} {}", b.code, b.stderr.trim().lines().last().unwrap_or(""));
        assert_store_clean(&f, what);
    }
    eprintln!("lying layouts: {refused}/{} refused by load", lies.len());
    assert!(accepted.is_empty(), "lying layouts were accepted:\n{}", accepted.join("\n"));
}
