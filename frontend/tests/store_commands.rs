//! The commands around the store: save/load (also with docker), tag/rmi/prune, check,
//! run and lint.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A store with one built image, `app:1`, whose CMD prints a file.
fn with_app() -> Option<(Forge, TempDir, String)> {
    let f = Forge::with_base()?;
    let ctx = context(&[
        ("Dockerfile", "FROM busybox:local\nCOPY msg.txt /msg.txt\nRUN echo built > /built.txt\nCMD [\"cat\", \"/msg.txt\"]\n"),
        ("msg.txt", &format!("message {}\n", std::process::id())),
    ]);
    let d = f.build(ctx.path(), &["-t", "app:1"]).digest();
    Some((f, ctx, d))
}

fn blob_path(f: &Forge, digest: &str) -> PathBuf {
    f.root()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Digests of the image's manifest, config and layers.
fn image_blobs(f: &Forge, name: &str) -> Vec<String> {
    let ins = f.inspect(name);
    let mut v = vec![
        ins["ManifestDigest"].as_str().unwrap().to_string(),
        ins["Id"].as_str().unwrap().to_string(),
    ];
    for l in ins["Manifest"]["layers"].as_array().unwrap() {
        v.push(l["digest"].as_str().unwrap().to_string());
    }
    v
}

#[test]
fn save_and_load_round_trip() {
    let Some((f, _ctx, digest)) = with_app() else {
        return;
    };
    let tar = f.scratch("app.tar");
    f.ok(&["save", "-o", tar.to_str().unwrap(), "app:1"]);
    let g = Forge::new();
    let o = g.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(o.stdout.contains("app:1"), "{}", o.stdout);
    // The build kept its layers as plain tars; `save` compresses them, so the manifest is a
    // new one, over the same config (the image ID) and the same diff_ids.
    let (here, there) = (f.inspect("app:1"), g.inspect("app:1"));
    assert_eq!(here["ManifestDigest"].as_str().unwrap(), digest);
    assert_eq!(there["Id"], here["Id"], "the image changed in the round trip");
    assert_eq!(there["Config"]["rootfs"], here["Config"]["rootfs"]);
    let o = g.ok(&["run", "--rm", "app:1"]);
    assert_eq!(o.stdout, format!("message {}\n", std::process::id()));
    // stdin/stdout work too.
    let o = run_cmd(Command::new("sh").arg("-c").arg(format!(
        "{0} --root {1} save app:1 | {0} --root {2} load",
        forge_bin().display(),
        f.root().display(),
        Forge::new().root().display()
    )));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("app:1"));
    // The OCI-only format loads too, and a bad archive fails with exit 1.
    let oci = f.scratch("app-oci.tar");
    f.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci.to_str().unwrap(),
        "app:1",
    ]);
    let h = Forge::new();
    h.ok(&["load", "-i", oci.to_str().unwrap()]);
    assert_eq!(
        h.inspect("app:1")["ManifestDigest"],
        there["ManifestDigest"],
        "both formats carry the same compressed image"
    );
    let junk = f.scratch("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    assert_eq!(h.run(&["load", "-i", junk.to_str().unwrap()]).code, 1);
}

struct DockerImage<'a>(&'a Path, String);
impl Drop for DockerImage<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
    }
}

#[test]
fn forge_save_loads_into_docker_and_docker_save_loads_into_forge() {
    let Some((f, _ctx, _)) = with_app() else {
        return;
    };
    let Some(docker) = docker() else { return };
    let name = format!("forge-e2e-save-{}:1", std::process::id());
    f.ok(&["tag", "app:1", &name]);
    let tar = f.scratch("combined.tar");
    f.ok(&["save", "-o", tar.to_str().unwrap(), &name]);
    let _guard = DockerImage(&docker, name.clone());
    let o = run_cmd(Command::new(&docker).arg("load").arg("-i").arg(&tar)).ok();
    assert!(o.stdout.contains(&name), "{}", o.stdout);
    let o = run_cmd(Command::new(&docker).args(["run", "--rm", "--network=none", &name])).ok();
    assert_eq!(o.stdout, format!("message {}\n", std::process::id()));

    let dsave = f.scratch("docker-save.tar");
    run_cmd(
        Command::new(&docker)
            .arg("save")
            .arg("-o")
            .arg(&dsave)
            .arg(&name),
    )
    .ok();
    let g = Forge::new();
    let o = g.ok(&["load", "-i", dsave.to_str().unwrap()]);
    assert!(o.stdout.contains(&name), "{}", o.stdout);
    assert_eq!(
        g.inspect(&name)["Id"],
        f.inspect(&name)["Id"],
        "the config changed going through docker"
    );
    let o = g.ok(&["run", "--rm", &name]);
    assert_eq!(o.stdout, format!("message {}\n", std::process::id()));
}

#[test]
fn tag_rmi_and_prune() {
    let Some((f, _ctx, digest)) = with_app() else {
        return;
    };
    f.ok(&["tag", "app:1", "other/app:2"]);
    assert_eq!(
        f.inspect("other/app:2")["ManifestDigest"].as_str().unwrap(),
        digest
    );
    let blobs = image_blobs(&f, "app:1");
    let o = f.ok(&["rmi", "app:1"]);
    assert!(o.stdout.contains("app:1"));
    assert_eq!(
        f.run(&["inspect", "app:1"]).code,
        1,
        "app:1 still resolves after rmi"
    );
    f.ok(&["prune", "--all"]);
    for b in &blobs {
        assert!(
            blob_path(&f, b).is_file(),
            "prune removed {b}, which the tagged other/app:2 needs"
        );
    }
    f.ok(&["run", "--rm", "other/app:2"]);
    // Untagged: everything only it needed goes (the base image stays: it is still tagged).
    f.ok(&["rmi", "other/app:2"]);
    let base = image_blobs(&f, BASE);
    let o = f.ok(&["prune", "--all"]);
    assert!(o.stdout.starts_with("removed "), "{}", o.stdout);
    for b in &blobs {
        let still = blob_path(&f, b).is_file();
        assert_eq!(still, base.contains(b), "after prune, {b} present={still}");
    }
    assert_eq!(f.run(&["rmi", "no-such-image:1"]).code, 1);
}

#[test]
fn plain_prune_keeps_the_build_cache() {
    let Some((f, ctx, digest)) = with_app() else {
        return;
    };
    let blobs = image_blobs(&f, "app:1");
    f.ok(&["rmi", "app:1"]);
    f.ok(&["prune"]);
    // The untagged image's manifest and config go; its layers stay for the cache records.
    assert!(
        !blob_path(&f, &digest).exists(),
        "plain prune kept the untagged manifest"
    );
    assert!(
        !blob_path(&f, &blobs[1]).exists(),
        "plain prune kept the untagged config"
    );
    for l in &blobs[2..] {
        assert!(
            blob_path(&f, l).is_file(),
            "plain prune removed layer {l}, which a cache record needs"
        );
    }
    // Cache records keep their layers: the rebuild reruns nothing.
    let b = f.build(ctx.path(), &["-t", "app:1"]);
    assert!(b.progress.ran().is_empty(), "{:?}", b.progress.ran());
    f.ok(&["run", "--rm", "app:1"]);
}

#[test]
fn check_finds_a_corrupt_blob_and_repair_fixes_it() {
    let Some((f, ctx, _)) = with_app() else {
        return;
    };
    let o = f.ok(&["check"]);
    assert!(o.stdout.contains("no problems found"), "{}", o.stdout);
    let layer = image_blobs(&f, "app:1").last().unwrap().clone();
    let p = blob_path(&f, &layer);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    // Blobs may be read-only; replace the file.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    let o = f.run(&["check"]);
    assert_eq!(
        o.code, 1,
        "check missed the corruption\n{}{}",
        o.stdout, o.stderr
    );
    assert!(
        o.stdout.contains(&format!("corrupt blob {layer}")),
        "{}",
        o.stdout
    );
    let o = f.run(&["check", "--repair"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        !p.exists() || std::fs::read(&p).unwrap() != bytes,
        "--repair left the corrupt blob in place"
    );
    let o = f.run(&["check"]);
    assert!(!o.stdout.contains("corrupt blob"), "{}", o.stdout);
    // A rebuild restores the image, after which the store is clean.
    f.build(ctx.path(), &["-t", "app:1"]);
    let o = f.ok(&["check"]);
    assert!(o.stdout.contains("no problems found"), "{}", o.stdout);
    f.ok(&["run", "--rm", "app:1"]);
}

#[test]
fn run_passes_exit_code_env_volumes_workdir_and_user() {
    let Some((f, _ctx, _)) = with_app() else {
        return;
    };
    assert_eq!(
        f.run(&["run", "--rm", "app:1", "sh", "-c", "exit 7"]).code,
        7
    );
    assert_eq!(f.run(&["run", "--rm", "app:1", "false"]).code, 1);
    let o = f.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar baz",
        "app:1",
        "sh",
        "-c",
        "echo \"$FOO\"",
    ]);
    assert_eq!(o.stdout, "bar baz\n");
    let vol = f.scratch("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("in.txt"), "from host\n").unwrap();
    let o = f.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", vol.display()),
        "app:1",
        "sh",
        "-c",
        "cat /data/in.txt && echo written > /data/out.txt",
    ]);
    assert_eq!(o.stdout, "from host\n");
    assert_eq!(
        std::fs::read_to_string(vol.join("out.txt")).unwrap(),
        "written\n",
        "a -v mount did not write through"
    );
    let o = f.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data:ro", vol.display()),
        "app:1",
        "sh",
        "-c",
        "echo x > /data/ro.txt",
    ]);
    assert_ne!(o.code, 0, "a :ro volume was writable");
    assert!(!vol.join("ro.txt").exists());
    let o = f.ok(&["run", "--rm", "-w", "/tmp", "app:1", "pwd"]);
    assert_eq!(o.stdout, "/tmp\n");
    let o = f.ok(&["run", "--rm", "--user", "app", "app:1", "id", "-u"]);
    assert_eq!(o.stdout, "1000\n");
    let o = f.ok(&[
        "run",
        "--rm",
        "-u",
        "1234:5678",
        "app:1",
        "sh",
        "-c",
        "echo $(id -u):$(id -g)",
    ]);
    assert_eq!(o.stdout, "1234:5678\n");
    // The image's files are not changed by a run.
    f.ok(&[
        "run",
        "--rm",
        "app:1",
        "sh",
        "-c",
        "echo scribble > /msg.txt",
    ]);
    let o = f.ok(&["run", "--rm", "app:1"]);
    assert_eq!(o.stdout, format!("message {}\n", std::process::id()));
    assert_eq!(f.run(&["run", "--rm", "no-such-image:1"]).code, 1);
}

#[test]
fn lint_exit_codes() {
    let f = Forge::new();
    let dir = context(&[
        (
            "good/Dockerfile",
            "FROM busybox:local\nRUN true\nCMD [\"sh\"]\n",
        ),
        ("bad/Dockerfile", "FROM busybox:local\nRUNN true\n"),
        ("warn/Dockerfile", "from busybox:local AS Build\nCMD sh\n"),
    ]);
    let p = |d: &str| dir.path().join(d).join("Dockerfile").display().to_string();
    let o = f.run(&["lint", "-f", &p("good")]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("0 error(s), 0 warning(s)"),
        "{}",
        o.stdout
    );
    let o = f.run(&["lint", "-f", &p("bad")]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("RUNN"), "{}", o.stdout);
    let o = f.run(&["lint", "-f", &p("warn")]);
    assert_eq!(
        o.code, 0,
        "warnings alone must not fail lint: {}{}",
        o.stdout, o.stderr
    );
    assert!(
        !o.stdout.contains(" 0 warning(s)"),
        "the warnings were not reported: {}",
        o.stdout
    );
    let o = f.run(&["lint", "--format", "json", "-f", &p("bad")]);
    assert_eq!(o.code, 1);
    let v = o.json();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|d| d["severity"] == "error" && d["line"] == 2),
        "{v}"
    );
    assert_eq!(
        f.run(&["lint", "-f", &dir.path().join("nope").display().to_string()])
            .code,
        2
    );
}

#[test]
fn run_honours_entrypoint_and_cmd_and_images_lists_tags() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default-arg\"]\n",
    )]);
    f.build(ctx.path(), &["-t", "ep:1"]);
    assert_eq!(f.ok(&["run", "--rm", "ep:1"]).stdout, "ep default-arg\n");
    assert_eq!(f.ok(&["run", "--rm", "ep:1", "given"]).stdout, "ep given\n");
    assert_eq!(
        f.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "printf",
            "ep:1",
            "%s-%s\\n",
            "a",
            "b"
        ])
        .stdout,
        "a-b\n"
    );
    // ENTRYPOINT after CMD in a child resets the inherited CMD (as BuildKit does).
    let child = context(&[(
        "Dockerfile",
        "FROM ep:1\nENTRYPOINT [\"echo\", \"child\"]\n",
    )]);
    f.build(child.path(), &["-t", "ep:2"]);
    assert_eq!(f.ok(&["run", "--rm", "ep:2"]).stdout, "child\n");

    let table = f.ok(&["images"]).stdout;
    let row = table.lines().find(|l| {
        l.split_whitespace().next() == Some("ep") && l.split_whitespace().nth(1) == Some("1")
    });
    assert!(row.is_some(), "forge images does not list ep:1:\n{table}");
    let id = f.inspect("ep:1")["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")[..12]
        .to_string();
    assert!(row.unwrap().contains(&id), "{table}");
    let q = f.ok(&["images", "-q"]).stdout;
    assert!(q.lines().any(|l| l == id), "{q}");
}
