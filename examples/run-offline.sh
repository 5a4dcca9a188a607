#!/usr/bin/env bash
# Builds forge, makes a busybox base offline, builds examples/hello on it and runs the image.
# Needs: cargo, a static busybox (apt-get install busybox-static), and root (or user
# namespaces) for the RUN sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v busybox >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
    else
        echo "run-offline.sh: needs a static busybox (apt-get install busybox-static)" >&2
        exit 1
    fi
fi
cargo build --release -p forge
export PATH="${CARGO_TARGET_DIR:-$PWD/target}/release:$PATH"
export FORGE_ROOT=${FORGE_ROOT:-$(mktemp -d)/store}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fixtures/mkbase.sh "$work/busybox.tar" busybox:local
forge build --progress=plain \
    --build-context busybox=oci-layout://"$work/busybox.tar" \
    -t hello:latest examples/hello
forge run --rm hello:latest
