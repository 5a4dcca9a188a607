#!/usr/bin/env bash
# forge vs BuildKit vs Buildah, end to end, on the shared benchmark scenarios.
#
#   usage: benches/compare.sh [-n REPS] [-b "buildkit buildah forge"] [-s "SCENARIOS"]
#                             [-p "cold noop onefile"] [--forge-bin PATH] [--build]
#                             [--physical-reps N] [--no-physical] [--no-readme] [--name NAME]
#
#   -n REPS           repetitions, interleaved across builders (default 5)
#   -b BUILDERS       default "buildkit buildah forge" (the harness also knows "legacy")
#   -s SCENARIOS      default "multistage-parallel big-context deep seed-python-shape"
#   -p PHASES         default "cold noop onefile"
#   --forge-bin PATH  forge binary (default: $CARGO_TARGET_DIR/release/forge, else target/release/forge)
#   --build           run `cargo build --release -p forge` first
#   --physical-reps N repetitions of the physical references (default: REPS)
#   --no-physical     skip the physical references (stat walk, tar | zstd, ...)
#   --no-readme       do not rewrite the generated part of benches/README.md
#   --name NAME       results file stem under benches/results/ (default compare-<UTC date+time>)
#
# It reuses the harness in ../shared/bench (read-only): its run.sh does one measured build
# (wall clock of the build command, peak RSS from /usr/bin/time for daemonless builders or
# dockerd's VmHWM for BuildKit, per-step CACHED/RAN from the build log) and appends a JSON record;
# its summarize.py turns the records into tables. This script drives run.sh in the harness's
# interleaved order (for rep: for scenario: for builder: cold, noop, onefile), fills in the
# forge-specific facts the harness leaves to an adapter (image size/layers from `forge inspect`,
# the multistage stage timestamps from `forge run`), and writes:
#   benches/results/NAME.md             the harness report
#   benches/results/NAME.runs.jsonl     one JSON object per build
#   benches/results/NAME.physical.jsonl physical-limit references
#   benches/results/NAME.raw.txt        one line per build: builder scenario phase seconds rss_kb
#   benches/README.md                   the part between the GENERATED markers is replaced
#
# Environment (passed through to the harness):
#   FORGE_BASE        base image reference for forge (default 127.0.0.1:5000/busybox:1)
#   FORGE_STORE       forge's store, wiped for every cold build (default /tmp/forge-bench/forge-store)
#   FORGE_EXTRA_ARGS  extra `forge build` flags
#   BENCH_QUIET_MAX   seconds to wait for the shared machine to go quiet before each build
#                     (default here 10; the harness's own default of 300 is meant for an idle box)
#   BENCH_QUIET_PCT   CPU busy % that counts as quiet (default 15)
#   FORGE_BENCH_WORK  harness work dir: contexts, logs, store (default /tmp/forge-bench)
#
# Prerequisites: run ../shared/bench/setup.sh once as root (dockerd, buildah, the loopback
# registry with 127.0.0.1:5000/busybox:1, busybox:local in docker and buildah).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
HARNESS=${FORGE_BENCH_HARNESS:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd)}
argv_text="benches/compare.sh $*"

die() { echo "compare.sh: $*" >&2; exit 2; }
[ -n "$HARNESS" ] && [ -x "$HARNESS/run.sh" ] || die "harness not found (expected ../shared/bench beside the repository; set FORGE_BENCH_HARNESS)"

reps=5 builders="buildkit buildah forge" scenarios="multistage-parallel big-context deep seed-python-shape"
phases="cold noop onefile" forge_bin="" build=0 physical=1 preps="" readme=1 name=""
while [ $# -gt 0 ]; do
  case $1 in
    -n) reps=$2; shift 2 ;;
    -b) builders=$2; shift 2 ;;
    -s) scenarios=$2; shift 2 ;;
    -p) phases=$2; shift 2 ;;
    --forge-bin) forge_bin=$2; shift 2 ;;
    --build) build=1; shift ;;
    --physical-reps) preps=$2; shift 2 ;;
    --no-physical) physical=0; shift ;;
    --no-readme) readme=0; shift ;;
    --name) name=$2; shift 2 ;;
    -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case $reps in ''|*[!0-9]*) die "-n wants a number" ;; esac
preps=${preps:-$reps}

# ---- forge binary
if [ -z "$forge_bin" ]; then
  forge_bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/forge
fi
if [ $build = 1 ]; then
  (cd "$ROOT" && cargo build --release -p forge) || die "cargo build --release -p forge failed"
fi
case " $builders " in
  *" forge "*)
    [ -x "$forge_bin" ] || die "no forge binary at $forge_bin: build it with \`cargo build --release -p forge\` (or pass --build / --forge-bin)"
    forge_bin=$(cd "$(dirname "$forge_bin")" && pwd)/$(basename "$forge_bin") ;;
esac
export FORGE_BIN=$forge_bin
export FORGE_BASE=${FORGE_BASE:-127.0.0.1:5000/busybox:1}
export FORGE_BENCH_WORK=${FORGE_BENCH_WORK:-/tmp/forge-bench}
export FORGE_STORE=${FORGE_STORE:-$FORGE_BENCH_WORK/forge-store}
export BENCH_QUIET_MAX=${BENCH_QUIET_MAX:-10}
export BENCH_QUIET_PCT=${BENCH_QUIET_PCT:-15}
DOCKER=${DOCKER:-/usr/bin/docker}

# ---- prerequisites (fail early with the fix, not after 20 minutes)
for b in $builders; do
  case $b in
    buildkit|legacy) "$DOCKER" info >/dev/null 2>&1 || die "dockerd is not reachable through $DOCKER (run ../shared/bench/setup.sh as root)"
                     "$DOCKER" image inspect busybox:local >/dev/null 2>&1 || die "docker has no busybox:local (run ../shared/bench/setup.sh as root)" ;;
    buildah) command -v buildah >/dev/null || die "buildah is not installed (run ../shared/bench/setup.sh as root)"
             buildah inspect --type image localhost/busybox:local >/dev/null 2>&1 || die "buildah has no localhost/busybox:local (run ../shared/bench/setup.sh as root)" ;;
    forge) case $FORGE_BASE in
             127.0.0.1:*|localhost:*) curl -sf "http://${FORGE_BASE%%/*}/v2/" >/dev/null || die "registry ${FORGE_BASE%%/*} is not answering (run ../shared/bench/setup.sh as root)" ;;
           esac ;;
    *) die "unknown builder $b" ;;
  esac
done
for t in jq python3 /usr/bin/time; do command -v "$t" >/dev/null || die "$t is missing"; done

# ---- output files
mkdir -p "$HERE/results"
name=${name:-compare-$(date -u +%Y-%m-%dT%H%M)}
base=$HERE/results/$name
export FORGE_BENCH_RUNLOG=$base.runs.jsonl FORGE_BENCH_PHYSLOG=$base.physical.jsonl
raw=$base.raw.txt
: > "$FORGE_BENCH_RUNLOG"; : > "$raw"
[ $physical = 1 ] && : > "$FORGE_BENCH_PHYSLOG"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# the commit the run starts from (the working tree may carry uncommitted changes of other work)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || commit="$commit+uncommitted changes"
start=$(date +%s)
start_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "compare.sh: reps=$reps builders=[$builders] scenarios=[$scenarios] phases=[$phases] forge=$FORGE_BIN -> $base.*" >&2

for sc in $scenarios; do
  [ -f "$HARNESS/scenarios/$sc/Dockerfile" ] || die "unknown scenario $sc"
done

# forge_adapter SCENARIO PHASE: completes the last JSON record (a forge build) with the facts the
# harness's image_info/read_stage_times leave to an adapter.
forge_adapter() {
  local sc=$1 ph=$2 tag="forge-bench/$1:forge" info layers size times=""
  info=$("$FORGE_BIN" --root "$FORGE_STORE" inspect "$tag" 2>/dev/null) || return 0
  layers=$(jq '.[0].Config.rootfs.diff_ids | length' <<<"$info" 2>/dev/null) || layers=null
  size=$(jq '[.[0].Manifest.layers[].size] | add' <<<"$info" 2>/dev/null) || size=null
  if [ "$sc" = multistage-parallel ] && [ "$ph" = cold ]; then
    times=$("$FORGE_BIN" --root "$FORGE_STORE" run --rm "$tag" sh -c 'cat /bench/*/times' 2>/dev/null | tr '\n' ';')
  fi
  python3 "$HERE/lib/patch_last_run.py" "$FORGE_BENCH_RUNLOG" "${size:-null}" "${layers:-null}" "$times"
}

# ---- physical references (the machine's floor for walking/reading/hashing/compressing)
if [ $physical = 1 ] && [ "$preps" -gt 0 ]; then
  "$HARNESS/physical.sh" "$preps" big-context | tee -a "$raw"
fi

# ---- the matrix, interleaved exactly as the harness's compare.sh does it
for rep in $(seq 1 "$reps"); do
  for sc in $scenarios; do
    for b in $builders; do
      for ph in $phases; do
        line=$("$HARNESS/run.sh" "$b" "$sc" "$ph") || echo "compare.sh: FAILED $b $sc $ph (rep $rep)" >&2
        [ "$b" = forge ] && forge_adapter "$sc" "$ph"
        echo "$line rep=$rep load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$raw"
      done
    done
  done
  echo "compare.sh: rep $rep/$reps done after $(( $(date +%s) - start ))s" >&2
done
elapsed=$(( $(date +%s) - start ))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

python3 "$HARNESS/lib/summarize.py" --runs "$FORGE_BENCH_RUNLOG" --physical "$FORGE_BENCH_PHYSLOG" \
  --out "$base.md" --reps "$reps" --elapsed "$elapsed" >/dev/null || die "summarize.py failed"

if [ $readme = 1 ]; then
  python3 "$HERE/lib/readme.py" --readme "$HERE/README.md" --report "$base.md" --runs "$FORGE_BENCH_RUNLOG" \
    --physical "$FORGE_BENCH_PHYSLOG" --command "$argv_text" --commit "$commit" --started "$start_utc" \
    --load-start "$load_start" --load-end "$load_end" --results "results/$name" \
    --env "FORGE_BASE=$FORGE_BASE BENCH_QUIET_MAX=$BENCH_QUIET_MAX BENCH_QUIET_PCT=$BENCH_QUIET_PCT" \
    || die "README update failed"
  echo "compare.sh: updated $HERE/README.md" >&2
fi
echo "compare.sh: wrote $base.md (${elapsed}s)" >&2
