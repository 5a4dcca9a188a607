#!/usr/bin/env bash
# forge's own cost per Dockerfile step, on cold builds (empty store each time):
#   config-only steps: N x `ENV`/`LABEL` after FROM, against a FROM-only baseline;
#   RUN steps:         N x `RUN true`, against the same baseline.
# Per-step overhead = (median(N steps) - median(baseline)) / N. `RUN true` includes starting
# the sandbox, the overlay mount, the command and committing its (empty) layer.
#
#   usage: benches/step-overhead.sh [--forge-bin PATH] [-n STEPS] [-r REPS] [--base REF]
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
argv_text="benches/step-overhead.sh $*"
forge_bin="" steps=40 reps=5 base=127.0.0.1:5000/busybox:1
while [ $# -gt 0 ]; do
  case $1 in
    --forge-bin) forge_bin=$2; shift 2 ;;
    -n) steps=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "step-overhead.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
forge_bin=${forge_bin:-${CARGO_TARGET_DIR:-$ROOT/target}/release/forge}
[ -x "$forge_bin" ] || { echo "step-overhead.sh: no forge binary at $forge_bin" >&2; exit 2; }
work=$(mktemp -d /tmp/forge-step-overhead.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ctx"
{ echo "FROM $base"; } > "$work/base.Dockerfile"
{ echo "FROM $base"; for i in $(seq 1 "$steps"); do
    if [ $((i % 2)) = 0 ]; then echo "ENV V$i=value$i"; else echo "LABEL l$i=value$i"; fi
  done; } > "$work/config.Dockerfile"
{ echo "FROM $base"; for i in $(seq 1 "$steps"); do echo "RUN true # $i"; done; } > "$work/run.Dockerfile"
# The base image is pulled once into a seed store, then copied: only the steps are timed.
"$forge_bin" --root "$work/seed" pull "$base" >/dev/null 2>&1 || { echo "cannot pull $base" >&2; exit 1; }

measure() { # kind -> one line per rep: seconds
  local kind=$1
  for _ in $(seq 1 "$reps"); do
    rm -rf "$work/store"; cp -a "$work/seed" "$work/store"; sync
    local t0 t1
    t0=$(date +%s%N)
    "$forge_bin" --root "$work/store" build -q -f "$work/$kind.Dockerfile" "$work/ctx" >/dev/null 2>"$work/err" \
      || { cat "$work/err" >&2; exit 1; }
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))"
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
b=$(measure base | median)
c=$(measure config | median)
r=$(measure run | median)
echo "Command: \`$argv_text\` (forge $(git -C "$ROOT" rev-parse --short HEAD)), $reps reps, medians"
echo
echo "| build | median wall | per step over FROM-only |"
echo "|---|---|---|"
awk -v b="$b" -v c="$c" -v r="$r" -v n="$steps" 'BEGIN {
  printf "| FROM only | %.1f ms | |\n", b / 1000
  printf "| FROM + %d config steps (ENV/LABEL) | %.1f ms | %.2f ms |\n", n, c / 1000, (c - b) / 1000 / n
  printf "| FROM + %d x RUN true | %.1f ms | %.2f ms |\n", n, r / 1000, (r - b) / 1000 / n
}'
