//! The tar reader and layer applier must never panic and never write outside the target
//! directory, whatever the archive says: `../`, absolute names, symlink-then-write,
//! hard links out of the tree, truncated headers, bad checksums, PAX/GNU long names.
//!
//! The first byte picks the mode (merged tree or overlay snapshot); the rest is the layer
//! (plain tar, or gzip/zstd, which `apply_layer` detects). After applying, every path under
//! the sandbox directory must be inside the target (the fuzzer checks that nothing was
//! created beside it).
#![no_main]

use forge_oci::{apply_layer, ApplyMode, ApplyOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, layer)) = data.split_first() else { return };
    let sandbox = tempfile::tempdir().expect("temp dir");
    let target = sandbox.path().join("rootfs");
    std::fs::create_dir(&target).expect("target dir");
    let opts = ApplyOptions {
        mode: if mode & 1 == 0 { ApplyMode::Merged } else { ApplyMode::OverlaySnapshot },
        preserve_owner: false,
        userxattr: true,
    };
    let _ = apply_layer(layer, &target, &opts);
    // Nothing but the target may exist beside it.
    for e in std::fs::read_dir(sandbox.path()).expect("read sandbox").flatten() {
        assert_eq!(e.file_name(), "rootfs", "apply_layer wrote outside its target: {:?}", e.path());
    }
    // Make everything removable again (a layer may set mode 000 on directories).
    fn open_up(p: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(p) else { return };
        if meta.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(&target);
});
