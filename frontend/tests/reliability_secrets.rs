//! Secrets: `--secret` values never reach any blob, cache record, history entry, log line
//! (at any level), `--metadata-file`, output archive or error message. The whole store and
//! every output is searched for the secret bytes, inside compressed blobs and tar members
//! too. `forge lint` flags ARG/ENV names that look like secrets.

mod common;
mod reliability_common;

use common::*;
use reliability_common::*;

fn unique_secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("forge-{tag}-secret-{}-{nanos:x}", std::process::id())
}

/// Searches the store, the scratch outputs and the given texts; panics listing every hit.
#[track_caller]
fn assert_nowhere(f: &Forge, secret: &str, texts: &[(&str, &str)]) {
    let mut hits = find_bytes(&f.root(), secret.as_bytes());
    hits.extend(find_bytes(&f.root().parent().unwrap().join("scratch"), secret.as_bytes()));
    for (name, t) in texts {
        if t.contains(secret) {
            hits.push(format!("{name}: …{}…", &t[t.find(secret).unwrap().saturating_sub(80)..].chars().take(200).collect::<String>()));
        }
    }
    assert!(hits.is_empty(), "the secret leaked into:\n{}", hits.join("\n"));
}

#[test]
fn secrets_never_reach_the_store_outputs_or_logs() {
    let Some(f) = Forge::with_base() else { return };
    let env_secret = unique_secret("env");
    let file_secret = unique_secret("file");
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, &file_secret).unwrap();

    // The secret is read, hashed, compared and copied around inside the RUN, but never
    // written to the image or printed.
    let df = format!(
        "FROM {BASE}\n\
         RUN --mount=type=secret,id=tok test -s /run/secrets/tok && md5sum < /run/secrets/tok > /tok.md5\n\
         RUN --mount=type=secret,id=file,target=/s/file wc -c /s/file > /file.len && cp /s/file /tmp/x && rm /tmp/x\n\
         RUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && echo \"length ${{#TOK}}\"\n\
         RUN --mount=type=secret,id=tok sh -c 'v=$(cat /run/secrets/tok); [ \"$v\" != x ] && echo compared'\n\
         RUN printf 'layer-%s\\n' marker-7f3a > /marker\n\
         ENV PHASE=done\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let oci = f.scratch("out-oci.tar");
    let docker = f.scratch("out-docker.tar");
    let local = f.scratch("out-local");
    let meta = f.scratch("metadata.json");
    let iid = f.scratch("iid");
    let args: Vec<String> = vec![
        "--secret".into(),
        "id=tok,env=FORGE_REL_TOKEN".into(),
        "--secret".into(),
        format!("id=file,src={}", secret_file.display()),
        "-t".into(),
        "sec:1".into(),
        "-o".into(),
        format!("type=oci,dest={}", oci.display()),
        "-o".into(),
        format!("type=docker,dest={}", docker.display()),
        "-o".into(),
        format!("type=local,dest={}", local.display()),
        "--metadata-file".into(),
        meta.display().to_string(),
        "--iidfile".into(),
        iid.display().to_string(),
    ];
    let mut c = f.cmd();
    c.args(["--log-level", "debug", "build", "--progress=plain"]).args(&args).arg(ctx.path()).env("FORGE_REL_TOKEN", &env_secret).env("RUST_LOG", "trace");
    let out = run_cmd(&mut c);
    assert_eq!(out.code, 0, "build with secrets failed:\n{}", out.stderr);
    // The secret really was mounted: the image holds its checksum and length.
    assert!(std::fs::read_to_string(local.join("file.len")).unwrap().starts_with(&file_secret.len().to_string()));
    assert!(out.stderr.contains(&format!("length {}", env_secret.len())), "the env= secret was not visible to RUN:\n{}", out.stderr);
    assert!(std::fs::metadata(oci.as_path()).unwrap().len() > 0 && std::fs::metadata(docker.as_path()).unwrap().len() > 0);

    // Cached rebuild (debug logs again), history, inspect, save and plain progress.
    let mut c = f.cmd();
    c.args(["--log-level", "debug", "build", "--progress=plain", "--explain"]).args(&args).arg(ctx.path()).env("FORGE_REL_TOKEN", &env_secret);
    let again = run_cmd(&mut c);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let inspect = f.ok(&["inspect", "sec:1"]);
    let saved = f.scratch("saved.tar");
    let save = f.ok(&["--log-level", "debug", "save", "-o", &saved.display().to_string(), "sec:1"]);
    let images = f.ok(&["images", "--format", "json"]);
    // Controls: the search sees into image configs and into compressed layers of every archive.
    assert!(find_bytes(&saved, b"PHASE=done").len() + find_bytes(&oci, b"PHASE=done").len() >= 2, "the archive search does not see into the image config");
    let root = f.root();
    for archive in [&oci, &docker, &saved, &local, &root] {
        let hits = find_bytes(archive, b"layer-marker-7f3a");
        // Only layer content spells the marker out (the history has the printf format).
        assert!(!hits.is_empty(), "the search does not see into the layers of {}: {hits:?}", archive.display());
    }

    // A RUN that fails after reading the secret: the error names the command, not the value.
    let bad = context(&[("Dockerfile", &format!("FROM {BASE}\nRUN --mount=type=secret,id=tok sh -c 'v=$(cat /run/secrets/tok); test \"$v\" = wrong'\n"))]);
    let mut c = f.cmd();
    c.args(["--log-level", "debug", "build", "--progress=plain", "--secret", "id=tok,env=FORGE_REL_TOKEN", "--metadata-file"])
        .arg(f.scratch("failed-metadata.json"))
        .arg(bad.path())
        .env("FORGE_REL_TOKEN", &env_secret);
    let failed = run_cmd(&mut c);
    assert_ne!(failed.code, 0, "the failing RUN succeeded");
    assert!(failed.stderr.contains("ERROR"), "{}", failed.stderr);

    // A secret source that does not exist: the error names the path, nothing else.
    let missing = f.run(&["build", "--progress=plain", "--secret", "id=x,src=/nonexistent/forge-secret", ctx.path().to_str().unwrap()]);
    assert_ne!(missing.code, 0);

    assert_store_clean(&f, "secret builds");
    for secret in [&env_secret, &file_secret] {
        assert_nowhere(
            &f,
            secret,
            &[
                ("build stdout", &out.stdout),
                ("build stderr", &out.stderr),
                ("rebuild stderr", &again.stderr),
                ("inspect", &inspect.stdout),
                ("save output", &(save.stdout.clone() + &save.stderr)),
                ("images", &images.stdout),
                ("failed build", &(failed.stdout.clone() + &failed.stderr)),
                ("missing-secret error", &missing.stderr),
            ],
        );
    }
    // The secret's source file is outside the scratch outputs we searched; it is the only copy.
    assert_eq!(find_bytes(secret_dir.path(), file_secret.as_bytes()).len(), 1);
}

#[test]
fn lint_warns_about_secret_looking_arg_and_env_names() {
    let df = "FROM busybox\nARG GITHUB_TOKEN\nARG VERSION=1\nENV DB_PASSWORD=hunter2 LOG_LEVEL=info\nARG AWS_SECRET_ACCESS_KEY\nENV API_KEY=abc\nARG MONKEY=1\n";
    let ctx = context(&[("Dockerfile", df)]);
    let f = Forge::new();
    let o = f.run(&["lint", "--format", "json", "-f", ctx.path().join("Dockerfile").to_str().unwrap()]);
    assert!(matches!(o.code, 0 | 1), "{}", o.stderr);
    let v = o.json();
    let flagged: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["rule"] == "SecretsUsedInArgOrEnv")
        .map(|d| format!("{}:{}", d["line"], d["message"].as_str().unwrap_or("")))
        .collect();
    for (line, name) in [(2, "GITHUB_TOKEN"), (4, "DB_PASSWORD"), (5, "AWS_SECRET_ACCESS_KEY"), (6, "API_KEY")] {
        assert!(flagged.iter().any(|f| f.starts_with(&format!("{line}:")) && f.contains(name)), "{name} (line {line}) not flagged: {flagged:?}");
    }
    for name in ["VERSION", "LOG_LEVEL", "MONKEY"] {
        assert!(!flagged.iter().any(|f| f.contains(name)), "{name} wrongly flagged: {flagged:?}");
    }
    assert_eq!(flagged.len(), 4, "{flagged:?}");
    // The warning never repeats the value.
    assert!(!o.stdout.contains("hunter2"), "lint output repeats a secret value:\n{}", o.stdout);
}

/// Standard base64 (with padding), to look for an encoded `user:password` too.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `forge login --password-stdin` with `DOCKER_CONFIG` pointing at `config`; returns the output.
fn login(f: &Forge, config: &std::path::Path, host: &str, user: &str, password: &str) -> Out {
    use std::io::Write;
    let mut c = f.cmd();
    c.env("DOCKER_CONFIG", config)
        .args(["--log-level", "debug", "login", "-u", user, "--password-stdin", host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("run forge login");
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    Out::from(child.wait_with_output().unwrap())
}

/// Registry credentials: the password given to `forge login`, and the Basic header made from
/// it, appear in no output of login, build --push, pull or push at debug level, in no error
/// message when they are wrong, and nowhere in the stores or outputs. (`$DOCKER_CONFIG` holds
/// them, as Docker's does; it is the one place not searched.)
#[test]
fn registry_credentials_never_reach_logs_errors_or_the_store() {
    let Some(f) = Forge::with_base() else { return };
    let user = "forge-ci";
    let password = unique_secret("registry-password");
    let Some(reg) = Registry::start(Some((user, password.as_str()))) else { return };
    let host = reg.host();
    let config = tempfile::tempdir().unwrap();
    let encoded = base64(format!("{user}:{password}").as_bytes());
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut keep = |name: &str, o: &Out| {
        texts.push((format!("{name} stdout"), o.stdout.clone()));
        texts.push((format!("{name} stderr"), o.stderr.clone()));
    };

    // A wrong password: login fails and says so, without echoing either password.
    let wrong = unique_secret("wrong-password");
    let o = login(&f, config.path(), &host, user, &wrong);
    assert_ne!(o.code, 0, "login with a wrong password succeeded\n{}", o.stderr);
    assert!(o.stderr.contains(&host), "the error names the registry: {}", o.stderr);
    assert!(!o.stderr.contains(&wrong) && !o.stdout.contains(&wrong), "wrong password echoed: {}", o.stderr);
    keep("login (wrong)", &o);

    let o = login(&f, config.path(), &host, user, &password);
    assert_eq!(o.code, 0, "login failed\n{}", o.stderr);
    keep("login", &o);

    // Build and push with the stored credentials, at debug level, with a metadata file.
    let ctx = context(&[("Dockerfile", "FROM busybox:local\nRUN echo pushed > /pushed\n")]);
    let image = format!("{host}/secret/app:1");
    let meta = f.scratch("meta.json");
    let cfg = config.path().to_str().unwrap();
    let b = f.build_env(
        ctx.path(),
        &["--log-level", "debug", "-t", &image, "--push", "--metadata-file", meta.to_str().unwrap()],
        &[("DOCKER_CONFIG", cfg)],
    );
    keep("build --push", &b.out);
    let o = run_cmd(f.cmd().env("DOCKER_CONFIG", cfg).args(["--log-level", "debug", "push", &image, &format!("{host}/secret/copy:1")]));
    assert_eq!(o.code, 0, "push failed\n{}", o.stderr);
    keep("push", &o);

    // Another store pulls it back with the same credentials.
    let g = Forge::new();
    let o = run_cmd(g.cmd().env("DOCKER_CONFIG", cfg).args(["--log-level", "debug", "pull", &image]));
    assert_eq!(o.code, 0, "pull failed\n{}", o.stderr);
    keep("pull", &o);

    // Credentials the registry refuses: the errors say so without the secret.
    let bad_config = tempfile::tempdir().unwrap();
    let bad = format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, base64(format!("{user}:{wrong}").as_bytes()));
    std::fs::write(bad_config.path().join("config.json"), bad).unwrap();
    let bad_cfg = bad_config.path().to_str().unwrap();
    let o = run_cmd(g.cmd().env("DOCKER_CONFIG", bad_cfg).args(["--log-level", "debug", "pull", &format!("{host}/secret/copy:1")]));
    assert_ne!(o.code, 0, "pull with refused credentials succeeded\n{}", o.stderr);
    assert!(!o.stderr.contains(&wrong), "refused password echoed: {}", o.stderr);
    keep("pull (refused)", &o);
    let b = f.try_build_env(ctx.path(), &["--log-level", "debug", "-t", &format!("{host}/secret/refused:1"), "--push"], &[("DOCKER_CONFIG", bad_cfg)]);
    assert_ne!(b.out.code, 0, "push with refused credentials succeeded\n{}", b.out.stderr);
    keep("build --push (refused)", &b.out);

    let named: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    for secret in [password.as_str(), encoded.as_str()] {
        assert_nowhere(&f, secret, &named);
        assert_nowhere(&g, secret, &named);
    }
    assert_nowhere(&g, &wrong, &named);
}
