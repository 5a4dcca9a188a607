//! Per-run overhead of the sandbox: runs `true` 50 times on a busybox overlay rootfs.
//!
//! ```text
//! cargo run --release -p forge-sandbox --example bench_true
//! ```
fn main() {
    forge_sandbox::maybe_run_helper();
}
