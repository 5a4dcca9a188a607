#!/usr/bin/env bash
# forge's peak memory as the build context grows: the big-context scenario at 1x, 2x and 4x.
#
#   usage: benches/memory.sh [--forge-bin PATH] [--factors "1 2 4"] [--name NAME]
#
# The 2x and 4x contexts hold N hard-linked copies of the shared big-context tree (20,005 files,
# 345 MB each) under copy-1/ … copy-N/, so the files, bytes and directories all scale by N
# (hard links are read like any file: every byte is still hashed, tarred and copied). For each
# factor it runs a cold build (empty store) and a no-op rebuild of `COPY . .` + `RUN find` and
# reports wall time and peak RSS (/usr/bin/time -f %M). Results: benches/results/NAME.md.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HARNESS=${FORGE_BENCH_HARNESS:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd)}
argv_text="benches/memory.sh $*"
die() { echo "memory.sh: $*" >&2; exit 2; }
[ -n "$HARNESS" ] && [ -f "$HARNESS/lib/common.sh" ] || die "harness not found (expected ../shared/bench)"
forge_bin="" factors="1 2 4" name=""
while [ $# -gt 0 ]; do
  case $1 in
    --forge-bin) forge_bin=$2; shift 2 ;;
    --factors) factors=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
done
forge_bin=${forge_bin:-${CARGO_TARGET_DIR:-$ROOT/target}/release/forge}
[ -x "$forge_bin" ] || die "no forge binary at $forge_bin (cargo build --release -p forge)"
# shellcheck disable=SC1091
. "$HARNESS/lib/common.sh"
base=$(ensure_context big-context)
# shellcheck disable=SC1091
( . "$HARNESS/scenarios/big-context/scenario.env"; cp -p "$WORK/ctx/big-context.onefile.orig" "$base/$ONEFILE" )
work=${FORGE_BENCH_WORK:-/tmp/forge-bench}/memory
mkdir -p "$work" "$HERE/results"
name=${name:-memory-$(date -u +%Y%m%dT%H%M%SZ)}
out="$HERE/results/$name.md"
df="$HARNESS/scenarios/big-context/Dockerfile"
base_image=${FORGE_BASE:-127.0.0.1:5000/busybox:1}

rows=()
for n in $factors; do
  ctx="$work/ctx-$n"
  if [ ! -f "$ctx/.complete" ]; then
    rm -rf "$ctx"; mkdir -p "$ctx"
    for i in $(seq 1 "$n"); do cp -al "$base" "$ctx/copy-$i"; done
    touch "$ctx/.complete"
  fi
  files=$(find "$ctx" -type f ! -name .complete | wc -l)
  bytes=$(du -sb --count-links "$ctx" | cut -f1)
  store="$work/store"
  for phase in cold noop; do
    [ "$phase" = cold ] && { rm -rf "$store"; sync; }
    /usr/bin/time -f '%e %M' -o "$work/time.txt" "$forge_bin" --root "$store" build --progress plain \
      -t "forge-bench/memory:$n" -f "$df" --build-arg "BASE=$base_image" "$ctx" >"$work/build-$n-$phase.log" 2>&1 \
      || { tail -20 "$work/build-$n-$phase.log" >&2; die "build failed (x$n $phase)"; }
    read -r secs kb < "$work/time.txt"
    echo "x$n $phase: $files files, $((bytes / 1048576)) MiB: ${secs} s, peak RSS $((kb / 1024)) MiB" >&2
    rows+=("| ${n}x | $files | $((bytes / 1048576)) MiB | $phase | $secs s | $((kb / 1024)) MiB |")
  done
  rm -rf "$store"
done
{
  echo "Command: \`$argv_text\` (forge $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "| context | files | size | phase | wall | peak RSS |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$out"
