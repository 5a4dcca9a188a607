//! Context hashing: one file (by size), and a 20,000-file tree (about 200 MB, the text part of
//! the big-context scenario) through `forge_solver::context`, cold (empty stat cache: every file
//! is read and hashed) and warm (the persisted stat cache is decoded and every lookup hits, as in
//! a no-op rebuild). The page cache is warm in both: this measures forge, not the disk.

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use forge_benches::{fixture, fixture_file, Tree, TreeSpec};
use forge_solver::context::{hash_file, Context, Ignore, Kind};

fn main() {
    divan::main();
}

fn tree() -> Tree {
    fixture(&TreeSpec::big_context_text()).expect("fixture")
}

/// blake3 of one file, read in 256 KiB chunks.
#[divan::bench(args = [4 << 10, 64 << 10, 1 << 20, 16 << 20])]
fn hash_one_file(bencher: Bencher, size: usize) {
    let path = fixture_file(size).expect("fixture file");
    bencher
        .counter(BytesCount::new(size))
        .bench(|| hash_file(&path).expect("hash"));
}

/// The walk alone: readdir + lstat of every entry, .dockerignore-free (compare: `find -printf`).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn walk_tree(bencher: Bencher) {
    let t = tree();
    bencher
        .counter(ItemsCount::new(t.files))
        .bench(|| Context::walk(&t.root, Ignore::none()).expect("walk"));
}

fn hash_all(ctx: &Context) -> usize {
    let mut n = 0;
    for (rel, e) in ctx.entries() {
        if e.kind == Kind::File {
            divan::black_box(ctx.file_hash(rel, e).expect("hash"));
            n += 1;
        }
    }
    n
}

/// Walk + hash every file with an empty stat cache (first build of a context), one thread.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn tree_cold_sequential(bencher: Bencher) {
    let t = tree();
    bencher.counter(BytesCount::new(t.bytes)).bench(|| {
        let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
        hash_all(&ctx)
    });
}

fn warm_cache_bytes(t: &Tree) -> Vec<u8> {
    let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    hash_all(&ctx);
    ctx.stat_cache_bytes()
}

/// Walk + merge the persisted stat cache + look every file up (a no-op rebuild's context work).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn tree_warm(bencher: Bencher) {
    let t = tree();
    let persisted = warm_cache_bytes(&t);
    bencher.counter(ItemsCount::new(t.files)).bench(|| {
        let mut ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
        assert!(ctx.load_stat_cache(&persisted[..]));
        hash_all(&ctx)
    });
}

/// Stat-cache persistence of 20,000 entries: merging it into a walked index, and writing it.
#[divan::bench(sample_count = 20)]
fn stat_cache_load(bencher: Bencher) {
    let t = tree();
    let persisted = warm_cache_bytes(&t);
    bencher
        .counter(BytesCount::new(persisted.len()))
        .with_inputs(|| Context::walk(&t.root, Ignore::none()).expect("walk"))
        .bench_local_values(|mut ctx| ctx.load_stat_cache(&persisted[..]));
}

#[divan::bench(sample_count = 20)]
fn stat_cache_write(bencher: Bencher) {
    let t = tree();
    let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    hash_all(&ctx);
    bencher
        .counter(ItemsCount::new(t.files))
        .bench(|| ctx.stat_cache_bytes());
}
