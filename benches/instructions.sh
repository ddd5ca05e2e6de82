#!/usr/bin/env bash
# Instructions per message: a figure that does not move with the machine's load, as the
# times of compare.sh do (30 % between runs on this shared machine). Each workload runs
# under `valgrind --tool=callgrind --trace-children=yes` (every process of the tree
# counted: node B and the node A it starts), once with N messages and once with 1, the
# same command otherwise (warm-ups, session opening and start-up alike), and the figure is
# (instructions(N) - instructions(1)) / (N - 1) messages.
#
#   bash benches/instructions.sh
#   RUNTIMES=current-thread PINGS=50000 REPEATS=1 SYSTEMS=duologue bash benches/instructions.sh
#   PROFILES=/tmp/profiles bash benches/instructions.sh    # keep the callgrind.out files
#
# Workloads: cast (one-way casts to a sink), per cast; call (sequential echo calls), per
# call (a request and its reply); ping-pong (Proto.Actor's method, one session), per
# message with both directions counted as the bench counts them: N pings are 2 N messages.
# duologue's cast and ping-pong run twice, against actors that take a run of messages as
# one mailbox message (`batches`) and against actors that take each alone (`one_by_one`).
# Systems: ractor in one process (`local`, the baseline's ceiling), ractor_cluster across
# two processes (the baseline), and duologue's two_process on every runtime in RUNTIMES.
# Each count runs REPEATS times (default 2); `spread` is the largest relative difference
# between the repeats' figures, flagged when it passes 2 %.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIMES=${RUNTIMES:-multi-thread current-thread}
CASTS=${CASTS:-100000}
CALLS=${CALLS:-10000}
PINGS=${PINGS:-100000}
PAYLOAD=${PAYLOAD:-64}
# ractor_cluster spends about 15 times duologue's instructions per message (its fixed
# warm-ups alone, 20 000 casts and 20 000 pings, take 4 billion), and its node B waits at
# most 120 s for the last pong (callgrind runs 50-100 times slower), so it counts fewer.
CLUSTER_CASTS=${CLUSTER_CASTS:-10000}
CLUSTER_CALLS=${CLUSTER_CALLS:-1000}
CLUSTER_PINGS=${CLUSTER_PINGS:-10000}
# Which systems to count: the baseline's two do not change with duologue's commits.
SYSTEMS=${SYSTEMS:-ractor_local ractor_cluster duologue}
REPEATS=${REPEATS:-2}
PROFILES=${PROFILES:-}
BASELINE=../shared/baselines/ractor_cluster_bench
BASELINE_TARGET_DIR=${BASELINE_TARGET_DIR:-target/baseline}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building (release)..." >&2
if [[ " $SYSTEMS " == *" ractor_"* ]]; then
  CARGO_TARGET_DIR=$BASELINE_TARGET_DIR cargo build -q --release --manifest-path "$BASELINE/Cargo.toml"
fi
baseline=$BASELINE_TARGET_DIR/release/ractor_cluster_bench
two_process=$(cargo bench -q --no-run --bench two_process --message-format=json 2>/dev/null |
  jq -r 'select(.target.name == "two_process" and .executable != null) | .executable')
[ -x "$two_process" ] || { echo "two_process was not built" >&2; exit 1; }

# count NAME COMMAND...: the instructions of COMMAND's whole process tree under callgrind
# (the sum of every process's totals), on stdout.
count() {
  local name=$1 dir
  shift
  dir=$(mktemp -d "$work/$name.XXXX")
  if ! valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$dir/callgrind.out.%p" "$@" >"$dir/stdout" 2>"$dir/stderr"; then
    echo "failed under callgrind: $*" >&2
    grep -v '^==' "$dir/stderr" | tail -5 >&2
    return 1
  fi
  if [ -n "$PROFILES" ]; then
    mkdir -p "$PROFILES"
    for file in "$dir"/callgrind.out.*; do cp "$file" "$PROFILES/$name.${file##*.}"; done
  fi
  # One file per process; its `totals:` line (or `summary:`, in older files) is the sum.
  for file in "$dir"/callgrind.out.*; do
    awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 } END { print (t != "" ? t : s) }' "$file"
  done | awk '{ sum += $1 } END { printf "%.0f\n", sum }'
  rm -rf "$dir"
}

# per MESSAGES BIG SMALL: (BIG - SMALL) / MESSAGES, to one decimal.
per() { awk -v m="$1" -v b="$2" -v s="$3" 'BEGIN { printf "%.1f", (b - s) / m }'; }

# measure SYSTEM KEY MESSAGES BASE_ARGS BIG_ARGS COMMAND...: runs COMMAND with BASE_ARGS
# and with BIG_ARGS, REPEATS times; prints the median figure and records the spread.
# The base run's count is shared between workloads of the same base (memoized by its
# arguments and repeat).
declare -A base_memo
spreads=()
measure() {
  local system=$1 key=$2 messages=$3 base_args=$4 big_args=$5 figures=() rep base big
  shift 5
  for rep in $(seq "$REPEATS"); do
    local memo="$system|$base_args|$rep"
    if [ -z "${base_memo[$memo]:-}" ]; then
      # shellcheck disable=SC2086 # the arguments are words
      base_memo[$memo]=$(count "${system}_base_$rep" "$@" $base_args)
    fi
    base=${base_memo[$memo]}
    # shellcheck disable=SC2086
    big=$(count "${system}_${key}_$rep" "$@" $big_args)
    figures+=("$(per "$messages" "$big" "$base")")
    echo "  $system $key repeat $rep: base=$base big=$big per_message=${figures[-1]}" >&2
  done
  local spread
  spread=$(printf '%s\n' "${figures[@]}" | awk 'NR == 1 { lo = hi = $1 } { if ($1 < lo) lo = $1; if ($1 > hi) hi = $1; sum += $1 }
    END { m = sum / NR; printf "%.2f", (m > 0 ? 100 * (hi - lo) / m : 0) }')
  spreads+=("$system/$key=$spread%")
  result=$(printf '%s\n' "${figures[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
}

out=$work/figures
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD) callgrind, repeats=$REPEATS casts=$CASTS calls=$CALLS pings=$PINGS payload=$PAYLOAD cluster: casts=$CLUSTER_CASTS calls=$CLUSTER_CALLS pings=$CLUSTER_PINGS"
echo "# instructions per cast, per call (request and reply), per ping-pong message (both directions counted); all processes"

# The baseline: `local` (one process) and the default mode (two). It cannot skip a phase,
# but 1 cast, 1 call or 1 ping is allowed: the base run has one of each.
for system in ractor_local ractor_cluster; do
  [[ " $SYSTEMS " == *" $system "* ]] || continue
  if [ "$system" = ractor_local ]; then
    mode=(local) casts=$CASTS calls=$CALLS pings=$PINGS
  else
    mode=() casts=$CLUSTER_CASTS calls=$CLUSTER_CALLS pings=$CLUSTER_PINGS
  fi
  base="--casts 1 --calls 1 --pings 1 --payload $PAYLOAD"
  line="instructions $system"
  measure "$system" cast $((casts - 1)) "$base" "--casts $casts --calls 1 --pings 1 --payload $PAYLOAD" "$baseline" "${mode[@]}"
  line+=" cast=$result"
  measure "$system" call $((calls - 1)) "$base" "--casts 1 --calls $calls --pings 1 --payload $PAYLOAD" "$baseline" "${mode[@]}"
  line+=" call=$result"
  measure "$system" pingpong $((2 * (pings - 1))) "$base" "--casts 1 --calls 1 --pings $pings --payload $PAYLOAD" "$baseline" "${mode[@]}"
  line+=" pingpong=$result"
  echo "$line" | tee -a "$out"
done

# duologue: one session of ping-pong (--sessions 1), the cast and ping-pong phases of one
# delivery at a time (--cast-delivery, --delivery); the warm-ups run in every run.
[[ " $SYSTEMS " == *" duologue "* ]] || RUNTIMES=
for runtime in $RUNTIMES; do
  system=duologue_${runtime//-/_}
  line="instructions $system"
  for delivery in batches one-by-one; do
    key=${delivery//-/_}
    common="--payload $PAYLOAD --runtime $runtime --sessions 1 --cast-delivery $delivery --delivery $delivery"
    base="--casts 1 --calls 1 --pings 1 $common"
    measure "$system" "cast_$key" $((CASTS - 1)) "$base" "--casts $CASTS --calls 1 --pings 1 $common" "$two_process"
    line+=" cast_$key=$result"
    if [ "$delivery" = batches ]; then
      measure "$system" call $((CALLS - 1)) "$base" "--casts 1 --calls $CALLS --pings 1 $common" "$two_process"
      line+=" call=$result"
    fi
    measure "$system" "pingpong_$key" $((2 * (PINGS - 1))) "$base" "--casts 1 --calls 1 --pings $PINGS $common" "$two_process"
    line+=" pingpong_$key=$result"
  done
  echo "$line" | tee -a "$out"
done

figure() { awk -v label="$1" -v key="$2" '$1 == "instructions" && $2 == label { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$out"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for runtime in $RUNTIMES; do
  system=duologue_${runtime//-/_}
  for key in cast_batches cast_one_by_one call pingpong_batches pingpong_one_by_one; do
    theirs=${key%%_*}
    echo "ratio instructions ${key} $system/ractor_local=$(ratio "$(figure "$system" "$key")" "$(figure ractor_local "$theirs")") $system/ractor_cluster=$(ratio "$(figure "$system" "$key")" "$(figure ractor_cluster "$theirs")")"
  done
done
echo "spread ${spreads[*]}"
echo "# $SECONDS s under callgrind and building" >&2
awk -v s="${spreads[*]}" 'BEGIN { n = split(s, a, " "); for (i = 1; i <= n; i++) { split(a[i], kv, "="); if (kv[2] + 0 > 2) print "warning: repeats differ by more than 2 %: " a[i] > "/dev/stderr" } }'
