//! A persisted stat cache is read back into a walked context as a stream. Whatever the bytes,
//! loading must not panic, and a cache that is not accepted whole leaves no hash behind: every
//! file is then read for its hash, and the hash is the file's true one.
#![no_main]

use std::sync::OnceLock;

use forge_solver::context::{hash_file, Context, Ignore, Kind};
use libfuzzer_sys::fuzz_target;

/// A small context, made once: a few files and directories whose names sort around each other.
fn tree() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempfile::tempdir().expect("temp dir");
        for (p, c) in [("a-b", "1"), ("a0", "2"), ("a/b", "3"), ("a/c/d", "4"), ("z", "")] {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, c).expect("write");
        }
        t
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let root = tree();
    let mut ctx = Context::walk(root, Ignore::none()).expect("walk");
    let accepted = ctx.load_stat_cache(data);
    let files: Vec<(String, bool)> = ctx
        .entries()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(k, e)| (k.to_string(), e.known_hash().is_some()))
        .collect();
    if !accepted {
        assert!(files.iter().all(|(_, known)| !known), "a refused cache left a hash behind");
        for (rel, _) in &files {
            let e = ctx.get(rel).expect("entry");
            assert_eq!(ctx.file_hash(rel, e).expect("hash"), hash_file(&root.join(rel)).expect("hash"));
        }
    }
    // Writing back what was loaded is always possible.
    let _ = ctx.stat_cache_bytes();
});
