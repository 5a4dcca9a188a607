//! The images view: resolve_image, image, list_images.

mod common;

use common::*;
use forge_cache::{ImageSummary, StoreError};
use forge_oci::{image::to_canonical_json, media, Descriptor, Digest, Index, Platform};

#[test]
fn resolve_by_name_digest_and_prefix() {
    let (_t, store) = store();
    let img = put_image(&store, &[b"a"], "2024-01-01T00:00:00Z");
    store.set_tag("busybox", &img.manifest).unwrap();
    let m = &img.manifest;
    assert_eq!(&store.resolve_image("busybox").unwrap(), m);
    assert_eq!(&store.resolve_image("busybox:latest").unwrap(), m);
    assert_eq!(
        &store
            .resolve_image("docker.io/library/busybox:latest")
            .unwrap(),
        m
    );
    assert_eq!(&store.resolve_image(&m.to_string()).unwrap(), m);
    assert_eq!(&store.resolve_image(m.hex()).unwrap(), m);
    assert_eq!(&store.resolve_image(&m.hex()[..12]).unwrap(), m);
    assert_eq!(
        &store
            .resolve_image(&format!("sha256:{}", &m.hex()[..7]))
            .unwrap(),
        m
    );
    assert_eq!(&store.resolve_image(&format!("busybox@{m}")).unwrap(), m);

    // A prefix of a config or layer digest is not an image.
    assert!(matches!(
        store.resolve_image(&img.layers[0].hex()[..12]),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(matches!(
        store.resolve_image(&img.config.hex()[..12]),
        Err(StoreError::ImageNotFound(_))
    ));
    // Unknown things.
    assert!(
        matches!(store.resolve_image("alpine"), Err(StoreError::ImageNotFound(s)) if s == "alpine")
    );
    assert!(matches!(
        store.resolve_image("busybox:1.36"),
        Err(StoreError::ImageNotFound(_))
    ));
    let absent = Digest::of(b"absent");
    assert!(matches!(
        store.resolve_image(&absent.to_string()),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(matches!(
        store.resolve_image(&format!("busybox@{absent}")),
        Err(StoreError::ImageNotFound(_))
    ));
    // Not a name at all.
    let err = store.resolve_image("Not A Name!").unwrap_err();
    assert!(matches!(err, StoreError::InvalidName { .. }), "{err:?}");
    assert!(err.is_user_error());
}

#[test]
fn ambiguous_short_digests_are_reported() {
    let (_t, store) = store();
    // Make manifests until two share their first hex digit.
    let mut seen: std::collections::HashMap<char, Digest> = std::collections::HashMap::new();
    let (a, b) = loop {
        let img = put_image(
            &store,
            &[format!("layer {}", seen.len()).as_bytes()],
            "2024-01-01T00:00:00Z",
        );
        let c = img.manifest.hex().chars().next().unwrap();
        if let Some(prev) = seen.insert(c, img.manifest.clone()) {
            break (prev, img.manifest);
        }
    };
    let prefix = &a.hex()[..1];
    match store.resolve_image(prefix) {
        Err(StoreError::Ambiguous {
            prefix: p,
            mut candidates,
        }) => {
            assert_eq!(p, prefix);
            candidates.sort();
            let mut want = vec![a.clone(), b.clone()];
            want.sort();
            assert_eq!(candidates, want);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    // A longer prefix disambiguates.
    let common_len = a
        .hex()
        .chars()
        .zip(b.hex().chars())
        .take_while(|(x, y)| x == y)
        .count();
    assert_eq!(store.resolve_image(&a.hex()[..common_len + 1]).unwrap(), a);
}

#[test]
fn image_reads_manifest_and_config() {
    let (_t, store) = store();
    let img = put_image(&store, &[b"one", b"three"], "2024-05-06T07:08:09Z");
    let (m, cfg, cfg_digest) = store.image(&img.manifest).unwrap();
    assert_eq!(cfg_digest, img.config);
    assert_eq!(
        m.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
        img.layers
    );
    assert_eq!(cfg.rootfs.diff_ids, img.diff_ids);
    assert_eq!(cfg.created.as_deref(), Some("2024-05-06T07:08:09Z"));
    // A config or layer digest is not a manifest.
    assert!(matches!(
        store.image(&img.config),
        Err(StoreError::NotAManifest { .. })
    ));
    assert!(matches!(
        store.image(&img.layers[0]),
        Err(StoreError::BadJson { .. })
    ));
    assert!(matches!(
        store.image(&Digest::of(b"x")),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn image_picks_the_host_platform_from_an_index() {
    let (_t, store) = store();
    let host = Platform::host();
    let other = if host.architecture == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let other = Platform::parse(other).unwrap();
    let mine = put_image_for(&store, &[b"mine"], "2024-01-01T00:00:00Z", &host);
    let theirs = put_image_for(&store, &[b"theirs"], "2024-01-01T00:00:00Z", &other);
    let desc = |i: &TestImage, p: &Platform| {
        let mut d = Descriptor::new(media::OCI_MANIFEST, i.manifest.clone(), i.manifest_size);
        d.platform = Some(p.clone());
        d
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![desc(&theirs, &other), desc(&mine, &host)],
        annotations: None,
    };
    let index = store.put_blob_bytes(&to_canonical_json(&index)).unwrap();
    let (_, cfg, cfg_digest) = store.image(&index).unwrap();
    assert_eq!(cfg_digest, mine.config);
    assert_eq!(cfg.architecture, host.architecture);
    assert_eq!(
        store.platform_manifest(&index, &other).unwrap(),
        theirs.manifest
    );
    assert_eq!(
        store.platform_manifest(&mine.manifest, &other).unwrap(),
        mine.manifest
    );
    let s390 = Platform::parse("linux/s390x").unwrap();
    assert!(matches!(
        store.platform_manifest(&index, &s390),
        Err(StoreError::NoMatchingPlatform { .. })
    ));
}

#[test]
fn list_images_groups_names_by_manifest() {
    let (_t, store) = store();
    assert_eq!(store.list_images().unwrap(), vec![]);
    let a = put_image(&store, &[b"12345", b"1234567890"], "2024-01-01T00:00:00Z");
    let b = put_image(&store, &[b"xyz"], "2023-01-01T00:00:00Z");
    store.set_tag("zeta:1", &a.manifest).unwrap();
    store.set_tag("alpha", &a.manifest).unwrap();
    store.set_tag("beta", &b.manifest).unwrap();
    // A tag whose manifest is gone is left out of the listing (check reports it).
    store.set_tag("ghost", &Digest::of(b"gone")).unwrap();
    let platform = Platform::host().to_string();
    assert_eq!(
        store.list_images().unwrap(),
        vec![
            ImageSummary {
                names: vec![
                    "docker.io/library/alpha:latest".into(),
                    "docker.io/library/zeta:1".into()
                ],
                manifest: a.manifest.clone(),
                config: a.config.clone(),
                created: Some("2024-01-01T00:00:00Z".into()),
                size: 15,
                platform: platform.clone(),
            },
            ImageSummary {
                names: vec!["docker.io/library/beta:latest".into()],
                manifest: b.manifest.clone(),
                config: b.config.clone(),
                created: Some("2023-01-01T00:00:00Z".into()),
                size: 3,
                platform,
            },
        ]
    );
}
