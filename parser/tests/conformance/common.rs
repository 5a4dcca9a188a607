//! Shared helpers for the conformance runners.

use std::path::PathBuf;

/// `../shared/conformance` relative to the repository root.
pub fn corpus_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    assert!(
        root.is_dir(),
        "conformance corpora not found at {} (the repository must sit beside shared/)",
        root.display()
    );
    root
}

/// Prints the per-corpus summary line and fails when any case failed.
pub fn report(corpus: &str, passed: usize, total: usize, failures: &[String]) {
    println!("conformance {corpus}: {passed}/{total} passed");
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(40).collect();
        panic!("{corpus}: {} failures:\n{}", failures.len(), shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"));
    }
}
