//! The cache key of `COPY . /src` over a 20,000-file tree (about 200 MB of text, the big-context
//! shape), computed as forge's solver does it: walk the context, plan the copy items, hash
//! their contents (in parallel, through the stat cache), digest the items, build the key.
//!
//! - `cold`: empty stat cache, so every file is read and hashed (first build of a context).
//! - `warm`: the persisted stat cache is decoded and every file's hash comes from it (no-op).
//! - `warm_one_changed`: as `warm`, with one file missing from the stat cache (one-file edit).
//! - `plan_only` / `digest_only`: the two halves without the hashing.

use divan::counter::ItemsCount;
use divan::Bencher;
use forge_benches::{fixture, Tree, TreeSpec};
use forge_parser::Span;
use forge_solver::context::{Context, Ignore, Kind};
use forge_solver::copy::{self, CopyFlags, CopyPlan, SourceSide};
use forge_solver::key::{CacheKey, KeyBuilder};
use forge_solver::layered::LayeredView;
use forge_solver::Location;

fn main() {
    divan::main();
}

fn tree() -> Tree {
    fixture(&TreeSpec::big_context_text()).expect("fixture")
}

fn loc() -> Location {
    Location {
        instruction: "COPY . .".into(),
        span: Span::default(),
    }
}

fn plan(ctx: &Context) -> CopyPlan<'_> {
    let dest = LayeredView::new(Vec::new());
    copy::plan(
        &SourceSide::Context(ctx),
        &[".".to_string()],
        ".",
        "/src",
        &CopyFlags::default(),
        &dest,
        &loc(),
    )
    .expect("plan")
}

/// Everything `copy_step` does before the cache lookup.
fn key_of(ctx: &Context) -> CacheKey {
    let mut items = plan(ctx);
    items.hash(Some(ctx)).expect("hash");
    let digest = items.digest(&|_| true).expect("digest");
    let mut kb = KeyBuilder::new("copy");
    kb.parent(Some(&CacheKey([7; 32])))
        .str("from", "context")
        .list("sources", &[".".to_string()])
        .str("dest", ".")
        .str("workdir", "/src")
        .opt("chown", None)
        .opt("chmod", None)
        .str("unpack", "0")
        .digest("content", &digest);
    kb.finish().0
}

fn persisted(t: &Tree) -> Vec<u8> {
    let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    key_of(&ctx);
    ctx.stat_cache_bytes()
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn cold(bencher: Bencher) {
    let t = tree();
    bencher.counter(ItemsCount::new(t.files)).bench(|| {
        let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
        key_of(&ctx)
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn warm(bencher: Bencher) {
    let t = tree();
    let bytes = persisted(&t);
    let want = key_of(&Context::walk(&t.root, Ignore::none()).expect("walk"));
    bencher.counter(ItemsCount::new(t.files)).bench(|| {
        let mut ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
        ctx.load_stat_cache(&bytes[..]);
        let k = key_of(&ctx);
        assert!(k == want, "the warm key must equal the cold key");
        k
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn warm_one_changed(bencher: Bencher) {
    let t = tree();
    let mut ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    key_of(&ctx);
    let victim = "src/pkg07/mod03/file042.txt";
    assert!(ctx.get(victim).is_some(), "{victim} is in the tree");
    ctx.forget_hash(victim);
    let bytes = ctx.stat_cache_bytes();
    bencher.counter(ItemsCount::new(t.files)).bench(|| {
        let mut ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
        ctx.load_stat_cache(&bytes[..]);
        key_of(&ctx)
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn plan_only(bencher: Bencher) {
    let t = tree();
    let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    bencher
        .counter(ItemsCount::new(t.files))
        .bench(|| plan(&ctx).into_items().expect("items").len());
}

#[divan::bench(sample_count = 20)]
fn digest_only(bencher: Bencher) {
    let t = tree();
    let ctx = Context::walk(&t.root, Ignore::none()).expect("walk");
    let mut items = plan(&ctx).into_items().expect("items");
    copy::hash_items(&mut items, Some(&ctx)).expect("hash");
    assert!(items
        .iter()
        .filter(|i| i.kind == Kind::File)
        .all(|i| i.hash.is_some()));
    bencher
        .counter(ItemsCount::new(items.len()))
        .bench(|| copy::items_digest(&items));
}
