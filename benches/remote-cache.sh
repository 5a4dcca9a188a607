#!/usr/bin/env bash
# A cold builder with a warm remote cache, forge against BuildKit, on the shared scenarios.
#
#   usage: benches/remote-cache.sh [-n REPS] [-s "SCENARIOS"] [--forge-bin PATH]
#                                  [--registry HOST:PORT] [--name NAME]
#
#   -n REPS           interleaved repetitions (default 3)
#   -s SCENARIOS      default "big-context seed-python-shape"
#   --forge-bin PATH  forge binary (default: $CARGO_TARGET_DIR/release/forge, else target/release/forge)
#   --registry R      the loopback registry (default 127.0.0.1:5000, as ../shared/bench/setup.sh starts it)
#   --name NAME       results file stem under benches/results/ (default remote-cache-<UTC time>)
#
# What is measured, per scenario and repetition (only the build command is timed):
#   forge full        empty store, no cache: the whole build (base pulled from the registry)
#   forge remote      empty store, --cache-from type=registry (a mode=max cache pushed once
#                     beforehand by another store with --cache-to type=registry)
#   buildkit full     build cache pruned (docker builder prune -af), image removed
#   buildkit remote   the same, with --cache-from REF where REF was built with
#                     BUILDKIT_INLINE_CACHE=1 and pushed once beforehand
# Docker 20.10's CLI has no buildx here, so BuildKit's registry cache is its inline cache (the
# cache metadata in the pushed image, mode=min), the one `docker build` can import; every step
# of these scenarios is in the final image, so min and max cover the same steps.
#
# Output: a table on stdout and benches/results/NAME.md (+ NAME.raw.txt, one line per build).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HARNESS=${FORGE_BENCH_HARNESS:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd)}
argv_text="benches/remote-cache.sh $*"
die() { echo "remote-cache.sh: $*" >&2; exit 2; }
[ -n "$HARNESS" ] && [ -f "$HARNESS/lib/common.sh" ] || die "harness not found (expected ../shared/bench)"

reps=3 scenarios="big-context seed-python-shape" forge_bin="" reg=127.0.0.1:5000 name=""
while [ $# -gt 0 ]; do
  case $1 in
    -n) reps=$2; shift 2 ;;
    -s) scenarios=$2; shift 2 ;;
    --forge-bin) forge_bin=$2; shift 2 ;;
    --registry) reg=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
if [ -z "$forge_bin" ]; then
  forge_bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/forge
fi
[ -x "$forge_bin" ] || die "no forge binary at $forge_bin (cargo build --release -p forge)"
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1 || die "needs a running dockerd and $DOCKER"
curl -fsS "http://$reg/v2/" >/dev/null || die "no registry at $reg (run ../shared/bench/setup.sh)"

# The harness's context generator and paths (read-only use).
# shellcheck disable=SC1091
. "$HARNESS/lib/common.sh"
WORKDIR=${FORGE_BENCH_WORK:-/tmp/forge-bench}/remote-cache
mkdir -p "$WORKDIR" "$HERE/results"
name=${name:-remote-cache-$(date -u +%Y%m%dT%H%M%SZ)}
raw="$HERE/results/$name.raw.txt"
: > "$raw"
base_forge=${FORGE_BASE:-$reg/busybox:1}
base_docker=busybox:local

timed() { # label log cmd... -> appends "label seconds" to raw, fails loudly
  local label=$1 log=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" >"$log" 2>&1; then
    echo "remote-cache.sh: $label failed; log: $log" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  awk -v l="$label" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s %.3f\n", l, b - a }' | tee -a "$raw"
}

forge_build() { # store scenario ctx extra-args...
  local store=$1 sc=$2 ctx=$3; shift 3
  "$forge_bin" --root "$store" build --progress plain -t "forge-bench/$sc:remote" \
    -f "$HARNESS/scenarios/$sc/Dockerfile" --build-arg "BASE=$base_forge" "$@" "$ctx"
}

docker_build() { # scenario ctx tag extra-args...
  local sc=$1 ctx=$2 tag=$3; shift 3
  DOCKER_BUILDKIT=1 "$DOCKER" build --network "${DOCKER_NETWORK:-host}" --progress plain -t "$tag" -f "$HARNESS/scenarios/$sc/Dockerfile" \
    --build-arg "BASE=$base_docker" "$@" "$ctx"
}

docker_cold() { # tag...
  "$DOCKER" rmi -f "$@" >/dev/null 2>&1 || true
  "$DOCKER" builder prune -af >/dev/null 2>&1 || true
}

for sc in $scenarios; do
  ctx=$(ensure_context "$sc")
  # The onefile target back to its pristine content, so every builder sees the same context.
  # shellcheck disable=SC1091
  ( . "$HARNESS/scenarios/$sc/scenario.env"; cp -p "$WORK/ctx/$sc.onefile.orig" "$ctx/$ONEFILE" )
  fref="$reg/forge-bench-cache/$sc:forge"
  bref="$reg/forge-bench-cache/$sc:buildkit"
  echo "== $sc: seeding the remote caches (not timed)" >&2
  rm -rf "$WORKDIR/seed-store"
  forge_build "$WORKDIR/seed-store" "$sc" "$ctx" --cache-to "type=registry,ref=$fref,mode=max" >"$WORKDIR/seed-forge.log" 2>&1 \
    || { tail -20 "$WORKDIR/seed-forge.log" >&2; die "seeding forge's cache failed"; }
  rm -rf "$WORKDIR/seed-store"
  docker_cold "$bref"
  docker_build "$sc" "$ctx" "$bref" --build-arg BUILDKIT_INLINE_CACHE=1 >"$WORKDIR/seed-buildkit.log" 2>&1 \
    && "$DOCKER" push "$bref" >>"$WORKDIR/seed-buildkit.log" 2>&1 \
    || { tail -20 "$WORKDIR/seed-buildkit.log" >&2; die "seeding BuildKit's inline cache failed"; }
  for rep in $(seq 1 "$reps"); do
    echo "== $sc rep $rep/$reps" >&2
    store="$WORKDIR/store"
    rm -rf "$store"; sync
    timed "$sc forge full" "$WORKDIR/forge-full.log" forge_build "$store" "$sc" "$ctx"
    rm -rf "$store"; sync
    timed "$sc forge remote" "$WORKDIR/forge-remote.log" forge_build "$store" "$sc" "$ctx" --cache-from "type=registry,ref=$fref"
    grep -q '(0 steps ran' "$WORKDIR/forge-remote.log" || { echo "forge ran steps despite the remote cache:" >&2; grep -E 'steps ran' "$WORKDIR/forge-remote.log" >&2; }
    docker_cold "forge-bench/$sc:remote" "$bref"; sync
    timed "$sc buildkit full" "$WORKDIR/buildkit-full.log" docker_build "$sc" "$ctx" "forge-bench/$sc:remote"
    docker_cold "forge-bench/$sc:remote" "$bref"; sync
    timed "$sc buildkit remote" "$WORKDIR/buildkit-remote.log" docker_build "$sc" "$ctx" "forge-bench/$sc:remote" --cache-from "$bref"
    grep -c ' CACHED' "$WORKDIR/buildkit-remote.log" | sed 's/^/  buildkit cached steps: /' >&2
  done
  docker_cold "forge-bench/$sc:remote" "$bref"
done

python3 - "$raw" "$HERE/results/$name.md" "$argv_text" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'EOF'
import statistics, sys
raw, out, argv, commit = sys.argv[1:5]
runs = {}
for line in open(raw):
    *label, secs = line.split()
    runs.setdefault(tuple(label), []).append(float(secs))
def cell(k):
    v = runs.get(k, [])
    return (statistics.median(v), min(v), max(v)) if v else None
lines = [f"Command: `{argv}` (forge {commit})", "",
         "| scenario | forge full | forge remote | buildkit full | buildkit remote | forge remote / buildkit remote | forge remote / forge full |",
         "|---|---|---|---|---|---|---|"]
for sc in dict.fromkeys(k[0] for k in runs):
    c = {w: cell((sc, *w.split())) for w in ["forge full", "forge remote", "buildkit full", "buildkit remote"]}
    fmt = lambda x: f"{x[0]:.2f} s ({x[1]:.2f}–{x[2]:.2f})" if x else "–"
    r1 = f"**{c['forge remote'][0] / c['buildkit remote'][0]:.2f}×**" if c['forge remote'] and c['buildkit remote'] else "–"
    r2 = f"{c['forge remote'][0] / c['forge full'][0]:.2f}×" if c['forge remote'] and c['forge full'] else "–"
    lines.append(f"| {sc} | {fmt(c['forge full'])} | {fmt(c['forge remote'])} | {fmt(c['buildkit full'])} | {fmt(c['buildkit remote'])} | {r1} | {r2} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
