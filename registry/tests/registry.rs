//! Pull and push against real `docker-registry` instances: plain, htpasswd and token auth.

mod common;

use std::collections::HashMap;

use common::*;
use forge_oci::{media, Descriptor, Digest, Index, Platform};
use forge_registry::{BlobOutcome, Client, CredentialSource, Credentials, Progress, RegistryError};

fn outcomes(log: &[Progress]) -> Vec<BlobOutcome> {
    log.iter()
        .filter_map(|p| match p {
            Progress::BlobDone { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trip() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let src_dir = tempfile::tempdir().unwrap();
    let src = open_store(src_dir.path());
    let manifest = sample_image(&src, 300_000, 1);
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();

    let dest = reg.reference("forge/app:v1");
    let (log, rec) = recorder();
    let pushed = client
        .push(&src, &manifest, &dest, None, &rec)
        .await
        .unwrap();
    assert_eq!(pushed, manifest);
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::Uploaded; 3]
    );

    // Pushing again uploads nothing.
    let (log, rec) = recorder();
    client
        .push(&src, &manifest, &dest, None, &rec)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::AlreadyPresent; 3]
    );

    // The registry serves exactly what was pushed.
    let (bytes, media_type, digest) = client.get_manifest(&dest).await.unwrap();
    assert_eq!(
        (digest.clone(), media_type.as_str()),
        (manifest.clone(), media::OCI_MANIFEST)
    );
    assert_eq!(bytes, src.read_blob(&manifest).unwrap());

    let dst_dir = tempfile::tempdir().unwrap();
    let dst = open_store(dst_dir.path());
    let (log, rec) = recorder();
    let pulled = client
        .pull(&dest, &Platform::host(), &dst, &rec)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, manifest);
    assert_eq!(pulled.index_digest, None);
    assert_eq!(
        pulled.config.config.cmd.as_deref(),
        Some(&["/bin/true".to_string()][..])
    );
    for (d, size) in image_blobs(&src, &manifest) {
        assert_eq!(
            dst.read_blob(&d).unwrap(),
            src.read_blob(&d).unwrap(),
            "blob {d}"
        );
        assert_eq!(dst.blob_size(&d).unwrap(), size);
    }
    assert!(dst.has_blob(&manifest), "the manifest is stored too");
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::Downloaded; 3]
    );
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|p| matches!(p, Progress::Resolved { digest, .. } if *digest == manifest)));

    // Pulling again downloads nothing.
    let (log, rec) = recorder();
    client
        .pull(&dest, &Platform::host(), &dst, &rec)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::AlreadyPresent; 3]
    );

    // By digest, too.
    let by_digest = dest.without_tag_or_digest().with_digest(manifest.clone());
    let again = client
        .pull(&by_digest, &Platform::host(), &dst, &no_progress())
        .await
        .unwrap();
    assert_eq!(again.config_digest, pulled.config_digest);
    assert_eq!(
        client
            .head_blob(&dest, &pulled.config_digest)
            .await
            .unwrap(),
        Some(pulled.manifest.config.size)
    );
    assert_eq!(
        client
            .head_blob(&dest, &Digest::of(b"absent"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_a_multi_megabyte_blob() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    // A pass-through proxy, to see the requests.
    let proxy = FaultProxy::start(reg.port, vec![]);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let big = pseudo_random(5 * 1024 * 1024 + 123, 7);
    let digest = store.put_blob_bytes(&big).unwrap();
    let mut opts = test_options(CredentialSource::Anonymous);
    opts.chunk_size = 1024 * 1024;
    let client = Client::new(opts).unwrap();
    let dest = forge_oci::Reference::parse(&format!("{}/forge/chunked:1", proxy.host())).unwrap();

    let outcome = client
        .push_blob_from_store(&store, &dest, &digest, None, &no_progress())
        .await
        .unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    let patches = proxy
        .seen()
        .iter()
        .filter(|l| l.starts_with("PATCH "))
        .count();
    assert_eq!(
        patches,
        6,
        "5 MiB + 123 bytes in 1 MiB chunks: {:#?}",
        proxy.seen()
    );
    assert_eq!(
        client.head_blob(&dest, &digest).await.unwrap(),
        Some(big.len() as u64)
    );

    // Read it back through a fresh store.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open_store(dir2.path());
    let desc = Descriptor::new(media::OCI_LAYER_TAR, digest.clone(), big.len() as u64);
    assert!(client
        .fetch_blob_into_store(&dest, &desc, &store2, &no_progress())
        .await
        .unwrap());
    assert_eq!(store2.read_blob(&digest).unwrap(), big);

    // A small blob goes in one PUT, without PATCH.
    let small = store.put_blob_bytes(b"small blob").unwrap();
    let before = proxy.seen().len();
    client
        .push_blob_from_store(&store, &dest, &small, None, &no_progress())
        .await
        .unwrap();
    let new: Vec<String> = proxy.seen()[before..].to_vec();
    assert!(!new.iter().any(|l| l.starts_with("PATCH ")), "{new:#?}");
    assert_eq!(
        new.iter().filter(|l| l.starts_with("PUT ")).count(),
        1,
        "{new:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let proxy = FaultProxy::start(reg.port, vec![]);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let manifest = sample_image(&store, 100_000, 2);
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let base = forge_oci::Reference::parse(&format!("{}/team/base:1", proxy.host())).unwrap();
    let derived = forge_oci::Reference::parse(&format!("{}/team/derived:1", proxy.host())).unwrap();
    client
        .push(&store, &manifest, &base, None, &no_progress())
        .await
        .unwrap();

    let before = proxy.seen().len();
    let (log, rec) = recorder();
    client
        .push(&store, &manifest, &derived, Some(&base), &rec)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::Mounted; 3]
    );
    let new: Vec<String> = proxy.seen()[before..].to_vec();
    assert_eq!(
        new.iter()
            .filter(|l| l.contains("mount=sha256") && l.contains("from=team%2Fbase"))
            .count(),
        3,
        "{new:#?}"
    );
    assert!(
        !new.iter()
            .any(|l| l.starts_with("PATCH ") || (l.starts_with("PUT ") && l.contains("/blobs/"))),
        "{new:#?}"
    );

    // Mounting from a repository that lacks the blob falls back to an upload (202 path).
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_store(other_dir.path());
    let lonely = other.put_blob_bytes(b"only here").unwrap();
    let outcome = client
        .push_blob_from_store(&other, &derived, &lonely, Some(&base), &no_progress())
        .await
        .unwrap();
    assert_eq!(outcome, BlobOutcome::Uploaded);
    assert_eq!(client.head_blob(&derived, &lonely).await.unwrap(), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_login_and_clear_errors() {
    let auth = RegistryAuth::Htpasswd {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    let Some(reg) = TestRegistry::start(auth) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store"));
    let manifest = sample_image(&store, 10_000, 3);
    let dest = reg.reference("private/app:1");

    // Anonymous: a clear error naming the reference and what to run.
    let anon = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let err = anon
        .push(&store, &manifest, &dest, None, &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dest.to_string()) && msg.contains(&format!("forge login {}", reg.host())),
        "{msg}"
    );

    // Wrong password: login fails and writes nothing.
    let config = dir.path().join("docker").join("config.json");
    let client = Client::new(test_options(CredentialSource::DockerConfig(Some(
        config.clone(),
    ))))
    .unwrap();
    let err = client
        .login(&reg.host(), "alice", "wrong")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(!config.exists());
    assert!(
        !format!("{err:?} {err}").contains("wrong"),
        "the password leaks: {err:?}"
    );

    client
        .login(&format!("http://{}/", reg.host()), "alice", "wonderland")
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(
        written["auths"][reg.host()]["auth"],
        "YWxpY2U6d29uZGVybGFuZA=="
    );

    // A new client reads the file.
    let client = Client::new(test_options(CredentialSource::DockerConfig(Some(
        config.clone(),
    ))))
    .unwrap();
    client
        .push(&store, &manifest, &dest, None, &no_progress())
        .await
        .unwrap();
    let other = open_store(&dir.path().join("other"));
    client
        .pull(&dest, &Platform::host(), &other, &no_progress())
        .await
        .unwrap();

    // Missing tags say so.
    let err = client
        .pull(
            &reg.reference("private/app:nope"),
            &Platform::host(),
            &other,
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestNotFound { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("check that the repository and tag exist"),
        "{err}"
    );

    assert!(client.logout(&reg.host()).await.unwrap());
    assert!(!client.logout(&reg.host()).await.unwrap());
    let client = Client::new(test_options(CredentialSource::DockerConfig(Some(config)))).unwrap();
    let err = client
        .pull(&dest, &Platform::host(), &other, &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_scopes_and_mounts() {
    let tokens = TokenServer::start("bob", "builder");
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(tokens.clone())) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store"));
    let manifest = sample_image(&store, 50_000, 4);
    let creds = HashMap::from([(reg.host(), Credentials::basic("bob", "builder"))]);
    let client = Client::new(test_options(CredentialSource::Fixed(creds))).unwrap();

    let private = reg.reference("team/app:1");
    let public = reg.reference("public/app:1");
    client
        .push(&store, &manifest, &private, None, &no_progress())
        .await
        .unwrap();
    let (log, rec) = recorder();
    client
        .push(&store, &manifest, &public, Some(&private), &rec)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&log.lock().unwrap()),
        vec![BlobOutcome::Mounted; 3]
    );
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|r| r == "bob|repository:public/app:pull,push repository:team/app:pull|user"),
        "mount token must cover both repositories: {asked:#?}"
    );
    assert!(
        asked.iter().all(|r| !r.contains("builder")),
        "no password in the token URL"
    );
    // One token per scope set: the three blobs of a push share it.
    let pushes_for_private = asked
        .iter()
        .filter(|r| r.contains("|repository:team/app:pull,push|"))
        .count();
    assert_eq!(pushes_for_private, 1, "{asked:#?}");

    // Anonymous pulls: allowed under public/, refused elsewhere with advice.
    let anon = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let out = open_store(&dir.path().join("anon"));
    let pulled = anon
        .pull(&public, &Platform::host(), &out, &no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, manifest);
    let err = anon
        .pull(&private, &Platform::host(), &out, &no_progress())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("forge login"), "{err}");

    // Login goes through the token service; a bad password is a token error.
    let config = dir.path().join("config.json");
    let c = Client::new(test_options(CredentialSource::DockerConfig(Some(
        config.clone(),
    ))))
    .unwrap();
    let err = c.login(&reg.host(), "bob", "nope").await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Token { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("forge login"), "{err}");
    c.login(&reg.host(), "bob", "builder").await.unwrap();
    let c = Client::new(test_options(CredentialSource::DockerConfig(Some(config)))).unwrap();
    c.pull(
        &private,
        &Platform::host(),
        &open_store(&dir.path().join("c")),
        &no_progress(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_and_platforms() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let manifest = sample_image(&store, 1000, 5);
    let repo = reg.reference("multi/app");
    // Push two manifests by digest (the host's and an s390x one), then an index naming both.
    let s390x = Platform::parse("linux/s390x").unwrap();
    let (layer, diff_id) = make_layer(&[("s390x", b"big-endian", 0o644)]);
    let other_manifest = store_image_for(
        &store,
        &[(layer, diff_id, media::OCI_LAYER_GZIP)],
        &["/x"],
        &s390x,
    );
    let mut descs = Vec::new();
    for (m, platform) in [(&other_manifest, &s390x), (&manifest, &Platform::host())] {
        client
            .push(
                &store,
                m,
                &repo.with_digest(m.clone()),
                None,
                &no_progress(),
            )
            .await
            .unwrap();
        let mut d = Descriptor::new(media::OCI_MANIFEST, m.clone(), store.blob_size(m).unwrap());
        d.platform = Some(platform.clone());
        descs.push(d);
    }
    let (other, host) = (descs[0].clone(), descs[1].clone());
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: vec![other, host],
        annotations: None,
    };
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let tagged = repo.with_tag("multi").unwrap();
    let index_digest = client
        .put_manifest(&tagged, &index_bytes, media::OCI_INDEX)
        .await
        .unwrap();

    let out = open_store(&dir.path().join("out"));
    let pulled = client
        .pull(&tagged, &Platform::host(), &out, &no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, manifest);
    assert_eq!(pulled.index_digest, Some(index_digest.clone()));
    assert_eq!(
        out.read_blob(&index_digest).unwrap(),
        index_bytes,
        "the index is stored too"
    );

    let err = client
        .pull(
            &tagged,
            &Platform::parse("linux/riscv64").unwrap(),
            &out,
            &no_progress(),
        )
        .await
        .unwrap_err();
    match &err {
        RegistryError::NoMatchingPlatform { available, .. } => {
            assert!(
                available.contains(&"linux/s390x".to_string()),
                "{available:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("--platform"), "{err}");

    // The index can be pushed again from the store, by tag, with its manifest.
    let other_store = open_store(&dir.path().join("o2"));
    let idx2 = Index {
        manifests: vec![index.manifests[1].clone()],
        ..index.clone()
    };
    let idx2_digest = store
        .put_blob_bytes(&serde_json::to_vec(&idx2).unwrap())
        .unwrap();
    let dest = reg.reference("copy/app:idx");
    assert_eq!(
        client
            .push(&store, &idx2_digest, &dest, None, &no_progress())
            .await
            .unwrap(),
        idx2_digest
    );
    let p = client
        .pull(&dest, &Platform::host(), &other_store, &no_progress())
        .await
        .unwrap();
    assert_eq!(p.index_digest, Some(idx2_digest));
}
