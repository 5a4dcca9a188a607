//! Fault injection between the client and a real registry: dropped connections, 5xx, slow,
//! stalled, truncated, corrupted and endless bodies. Retries must recover from the transient
//! ones, give up after a bounded number of attempts on persistent ones, and never leave a
//! corrupt blob in the store.

mod common;

use std::time::Duration;

use common::*;
use forge_oci::{Platform, Reference};
use forge_registry::{Client, CredentialSource, Progress, RegistryError};

struct Setup {
    reg: TestRegistry,
    _dir: tempfile::TempDir,
    store: forge_cache::Store,
    manifest: forge_oci::Digest,
    big: forge_oci::Digest,
}

/// A registry holding a 2 MiB-layer image pushed without faults.
async fn setup() -> Option<Setup> {
    let reg = TestRegistry::start(RegistryAuth::None)?;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("src"));
    let manifest = sample_image(&store, 2 * 1024 * 1024, 9);
    let big = image_blobs(&store, &manifest).last().unwrap().0.clone();
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    client
        .push(
            &store,
            &manifest,
            &reg.reference("faulty/app:1"),
            None,
            &no_progress(),
        )
        .await
        .unwrap();
    Some(Setup {
        reg,
        _dir: dir,
        store,
        manifest,
        big,
    })
}

fn client(idle: Duration, retries: u32) -> Client {
    let mut opts = test_options(CredentialSource::Anonymous);
    opts.idle_timeout = idle;
    opts.max_retries = retries;
    Client::new(opts).unwrap()
}

fn via(proxy: &FaultProxy, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{}/{repo_tag}", proxy.host())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_recovers_from_transient_faults_and_resumes() {
    let Some(s) = setup().await else { return };
    let blob = format!("/blobs/{}", s.big);
    let proxy = FaultProxy::start(
        s.reg.port,
        vec![
            ("/manifests/", Fault::Status(500)),
            ("/manifests/", Fault::Reset),
            (&blob, Fault::Truncate(100_000)),
            (&blob, Fault::Reset),
            (&blob, Fault::Status(503)),
            (&blob, Fault::Stall(700_000)),
            (&blob, Fault::Status(429)),
            (&blob, Fault::Truncate(50_000)),
            (
                &blob,
                Fault::Slow {
                    piece: 64 * 1024,
                    pause: Duration::from_millis(2),
                },
            ),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let (log, rec) = recorder();
    let pulled = client(Duration::from_secs(1), 4)
        .pull(
            &via(&proxy, "faulty/app:1"),
            &Platform::host(),
            &store,
            &rec,
        )
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, s.manifest);
    assert_eq!(
        proxy.remaining_rules(),
        0,
        "every fault was hit: {:#?}",
        proxy.seen()
    );
    for (d, _) in image_blobs(&s.store, &s.manifest) {
        assert_eq!(
            store.read_blob(&d).unwrap(),
            s.store.read_blob(&d).unwrap(),
            "blob {d}"
        );
    }
    // Interrupted bodies resumed where they stopped instead of starting over.
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|l| l.contains(&blob) && l.contains("[range bytes=100000-]")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(&blob) && l.contains("[range bytes=800000-]")),
        "{seen:#?}"
    );
    let retries = log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| matches!(p, Progress::Retrying { .. }))
        .count();
    assert_eq!(
        retries, 3,
        "three broken bodies (truncated, stalled, truncated)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_body_is_never_stored() {
    let Some(s) = setup().await else { return };
    let blob = format!("/blobs/{}", s.big);
    let proxy = FaultProxy::start(s.reg.port, vec![(&blob, Fault::Corrupt(12_345))]);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let err = client(Duration::from_secs(10), 2)
        .pull(
            &via(&proxy, "faulty/app:1"),
            &Platform::host(),
            &store,
            &no_progress(),
        )
        .await
        .unwrap_err();
    match &err {
        RegistryError::DigestMismatch { expected, .. } => assert_eq!(*expected, s.big),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(
        !store.has_blob(&s.big),
        "the corrupt blob must not be stored"
    );
    assert!(
        !store.has_blob(&s.manifest),
        "nor the manifest of an incomplete image"
    );
    // Without the fault the same store completes the pull.
    let pulled = client(Duration::from_secs(10), 2)
        .pull(
            &via(&proxy, "faulty/app:1"),
            &Platform::host(),
            &store,
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.read_blob(&s.big).unwrap(),
        s.store.read_blob(&s.big).unwrap()
    );
    assert_eq!(pulled.manifest_digest, s.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_is_cut_off() {
    let Some(s) = setup().await else { return };
    let blob = format!("/blobs/{}", s.big);
    let proxy = FaultProxy::start(s.reg.port, vec![(&blob, Fault::Endless)]);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let err = client(Duration::from_secs(10), 2)
        .pull(
            &via(&proxy, "faulty/app:1"),
            &Platform::host(),
            &store,
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == s.store.blob_size(&s.big).unwrap()),
        "{err:?}"
    );
    assert!(!store.has_blob(&s.big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_give_up_after_bounded_attempts() {
    let Some(s) = setup().await else { return };
    let blob = format!("/blobs/{}", s.big);
    let mut rules: Vec<(&str, Fault)> = (0..20)
        .map(|_| (blob.as_str(), Fault::Status(500)))
        .collect();
    rules.extend((0..20).map(|_| ("/manifests/", Fault::Reset)));
    let proxy = FaultProxy::start(s.reg.port, rules);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let c = client(Duration::from_secs(10), 3);

    // Manifest requests that always reset: a network error after 1 + 3 attempts.
    let err = c
        .pull(
            &via(&proxy, "faulty/app:1"),
            &Platform::host(),
            &store,
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Network { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(
        proxy
            .seen()
            .iter()
            .filter(|l| l.contains("/manifests/"))
            .count(),
        4
    );

    // A blob that always answers 500: the status after 1 + 3 attempts.
    let desc = forge_oci::Descriptor::new(
        forge_oci::media::OCI_LAYER_GZIP,
        s.big.clone(),
        s.store.blob_size(&s.big).unwrap(),
    );
    let err = c
        .fetch_blob_into_store(&via(&proxy, "faulty/app"), &desc, &store, &no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(proxy.seen().iter().filter(|l| l.contains(&blob)).count(), 4);
    assert!(!store.has_blob(&s.big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_recovers_from_upload_faults() {
    let Some(s) = setup().await else { return };
    let proxy = FaultProxy::start(
        s.reg.port,
        vec![
            ("POST /v2/", Fault::Status(502)),
            ("PATCH /v2/", Fault::Pass),
            ("PATCH /v2/", Fault::Reset),
            ("PUT /v2/faulty/copy/blobs/", Fault::Status(500)),
            ("PATCH /v2/", Fault::Status(503)),
            ("PUT /v2/faulty/copy/manifests/", Fault::Reset),
        ],
    );
    let mut opts = test_options(CredentialSource::Anonymous);
    opts.chunk_size = 512 * 1024;
    opts.max_concurrent_uploads = 1;
    let c = Client::new(opts).unwrap();
    let dest = via(&proxy, "faulty/copy:1");
    let (log, rec) = recorder();
    let pushed = c
        .push(&s.store, &s.manifest, &dest, None, &rec)
        .await
        .unwrap();
    assert_eq!(pushed, s.manifest);
    assert_eq!(
        proxy.remaining_rules(),
        0,
        "every fault was hit: {:#?}",
        proxy.seen()
    );
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|p| matches!(p, Progress::Retrying { .. })));
    // Failed chunks resumed from where the registry stood instead of starting over.
    let seen = proxy.seen();
    let is_status_query = |l: &String| l.starts_with("GET /v2/faulty/copy/blobs/uploads/");
    assert_eq!(
        seen.iter().filter(|l| is_status_query(l)).count(),
        2,
        "one status query per failed PATCH: {seen:#?}"
    );
    let first = seen.iter().position(is_status_query).unwrap();
    assert!(
        seen[first + 1].starts_with("PATCH ")
            && seen[first + 1].contains("[content-range 524288-1048575]"),
        "the upload went on with the second chunk: {seen:#?}"
    );

    // What arrived is intact: pull it back without faults and compare.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    c.pull(
        &s.reg.reference("faulty/copy:1"),
        &Platform::host(),
        &store,
        &no_progress(),
    )
    .await
    .unwrap();
    for (d, _) in image_blobs(&s.store, &s.manifest) {
        assert_eq!(
            store.read_blob(&d).unwrap(),
            s.store.read_blob(&d).unwrap(),
            "blob {d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_bounded() {
    let Some(s) = setup().await else { return };
    let blob = format!("/blobs/{}", s.big);
    // Blob downloads are often redirected to other hosts (object storage).
    let proxy = FaultProxy::start(s.reg.port, vec![(&blob, Fault::Redirect(s.reg.port))]);
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let c = client(Duration::from_secs(10), 2);
    c.pull(
        &via(&proxy, "faulty/app:1"),
        &Platform::host(),
        &store,
        &no_progress(),
    )
    .await
    .unwrap();
    assert_eq!(proxy.remaining_rules(), 0);
    assert_eq!(
        store.read_blob(&s.big).unwrap(),
        s.store.read_blob(&s.big).unwrap()
    );

    // A redirect loop ends with an error, after max_redirects hops per attempt.
    let looping = FaultProxy::start(s.reg.port, vec![]);
    for _ in 0..50 {
        looping.add_rule(&blob, Fault::Redirect(looping.port));
    }
    let mut opts = test_options(CredentialSource::Anonymous);
    opts.max_redirects = 5;
    let c = Client::new(opts).unwrap();
    let desc = forge_oci::Descriptor::new(forge_oci::media::OCI_LAYER_GZIP, s.big.clone(), 1);
    let out = tempfile::tempdir().unwrap();
    let err = c
        .fetch_blob_into_store(
            &via(&looping, "faulty/app"),
            &desc,
            &open_store(out.path()),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Network { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        looping.seen().len(),
        6,
        "the first request and 5 redirects: {:#?}",
        looping.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_sizes_are_enforced() {
    let Some(s) = setup().await else { return };
    let real = s.store.blob_size(&s.big).unwrap();
    let c = client(Duration::from_secs(10), 2);
    let r = s.reg.reference("faulty/app");
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let desc =
        |size| forge_oci::Descriptor::new(forge_oci::media::OCI_LAYER_GZIP, s.big.clone(), size);

    // The registry has fewer bytes than the descriptor claims.
    let err = c
        .fetch_blob_into_store(&r, &desc(real + 10), &store, &no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::SizeMismatch { expected, actual, .. } if expected == real + 10 && actual == real),
        "{err:?}"
    );
    // More bytes than claimed: refused from the Content-Length, before reading the body.
    let err = c
        .fetch_blob_into_store(&r, &desc(real - 10), &store, &no_progress())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == real - 10),
        "{err:?}"
    );
    assert!(!store.has_blob(&s.big));
    // The right size works.
    assert!(c
        .fetch_blob_into_store(&r, &desc(real), &store, &no_progress())
        .await
        .unwrap());
}
