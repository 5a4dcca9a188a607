//! The ways `forge build` takes its inputs: -f (path and stdin), a context tar on stdin,
//! --build-arg from the environment, --label, several -t.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// `forge build` with `stdin` fed to it.
fn build_with_stdin(f: &Forge, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = f.cmd();
    c.arg("build")
        .arg("--progress=plain")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn rootfs_file(f: &Forge, image: &str, path: &str) -> String {
    f.ok(&["run", "--rm", image, "cat", path]).stdout
}

#[test]
fn dockerfile_from_stdin_and_from_another_path() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("data.txt", "data\n")]);
    let o = build_with_stdin(
        &f,
        &["-f", "-", "-t", "stdin-df:1", ctx.path().to_str().unwrap()],
        b"FROM busybox:local\nCOPY data.txt /data.txt\n",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(rootfs_file(&f, "stdin-df:1", "/data.txt"), "data\n");

    let elsewhere = context(&[(
        "build/Custom.dockerfile",
        "FROM busybox:local\nCOPY data.txt /again.txt\n",
    )]);
    let df = elsewhere.path().join("build/Custom.dockerfile");
    f.build(
        ctx.path(),
        &["-f", df.to_str().unwrap(), "-t", "other-df:1"],
    );
    assert_eq!(rootfs_file(&f, "other-df:1", "/again.txt"), "data\n");
    // Both from stdin is a usage error.
    let o = build_with_stdin(&f, &["-f", "-", "-"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn context_tar_from_stdin() {
    let Some(f) = Forge::with_base() else { return };
    let Some(tar) = tool("tar") else { return };
    let ctx = context(&[
        ("Dockerfile", "FROM busybox:local\nCOPY sub/ /sub/\n"),
        ("sub/a.txt", "a from tar\n"),
    ]);
    let t = Command::new(&tar)
        .arg("-C")
        .arg(ctx.path())
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(t.status.success());
    let bytes = t.stdout;
    let o = build_with_stdin(&f, &["-t", "stdin-ctx:1", "-"], &bytes);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(rootfs_file(&f, "stdin-ctx:1", "/sub/a.txt"), "a from tar\n");
    let o = build_with_stdin(
        &f,
        &["-"],
        b"this is not a tar archive, not even close to one...",
    );
    assert_ne!(o.code, 0);
}

#[test]
fn build_arg_from_environment_label_and_tags() {
    let Some(f) = Forge::with_base() else { return };
    let ctx = context(&[("Dockerfile", "FROM busybox:local\nARG FROM_ENV=default\nARG GIVEN\nRUN echo \"$FROM_ENV $GIVEN\" > /args.txt\nLABEL from.file=yes\n")]);
    let b = f.build_env(
        ctx.path(),
        &[
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "GIVEN=given",
            "--label",
            "from.cli=1",
            "--label",
            "from.file=overridden",
            "-t",
            "one:1",
            "-t",
            "two:2",
        ],
        &[("FROM_ENV", "from the environment")],
    );
    assert_eq!(
        rootfs_file(&f, "one:1", "/args.txt"),
        "from the environment given\n"
    );
    let one = f.inspect("one:1");
    assert_eq!(one["ManifestDigest"].as_str().unwrap(), b.digest());
    assert_eq!(f.inspect("two:2")["ManifestDigest"], one["ManifestDigest"]);
    let labels = &one["Config"]["config"]["Labels"];
    assert_eq!(labels["from.cli"], "1", "{labels}");
    assert_eq!(
        labels["from.file"], "overridden",
        "--label must win over LABEL: {labels}"
    );
    // A KEY that is not in the environment leaves the default.
    let b = f.build(ctx.path(), &["--build-arg", "FROM_ENV", "-t", "three:3"]);
    assert!(b.progress.step("RUN echo").ran());
    assert_eq!(rootfs_file(&f, "three:3", "/args.txt"), "default \n");
}

#[test]
fn context_that_is_not_a_directory_is_a_usage_error() {
    let f = Forge::new();
    let o = f.run(&["build", "/nonexistent/forge-e2e-context"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let file = f.scratch("plain-file");
    std::fs::write(&file, "x").unwrap();
    let o = f.run(&[
        "build",
        "-f",
        file.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}
