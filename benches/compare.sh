#!/usr/bin/env bash
# Side by side, in one invocation on one machine: ractor in one process (the ceiling no
# cross-process path can pass), ractor_cluster across two processes (the baseline), and
# duologue across two processes (on tokio's default runtime, as the baseline, and again on a
# current-thread runtime per node), on the same workload; then the ratios. Then duologue's
# own figures under load: memory under a slow consumer, and sessions at scale.
#
#   bash benches/compare.sh          # 1 000 000 casts, 10 000 calls, 64-byte payload,
#                                  # 1 000 000 pings
#   CASTS=200000 CALLS=2000 bash benches/compare.sh
#   INSTRUCTIONS=0 bash benches/compare.sh   # without the instruction counts at the end
#
# The baseline lives in ../shared/baselines/ractor_cluster_bench (read-only); it is built
# into target/baseline so nothing is written under shared/.
set -euo pipefail
cd "$(dirname "$0")/.."
CASTS=${CASTS:-1000000}
CALLS=${CALLS:-10000}
PAYLOAD=${PAYLOAD:-64}
BASELINE=../shared/baselines/ractor_cluster_bench
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "building (release)..." >&2
CARGO_TARGET_DIR=target/baseline cargo build -q --release --manifest-path "$BASELINE/Cargo.toml"
cargo bench -q --no-run --bench two_process --bench slow_consumer --bench sessions --bench entities 2>/dev/null

run() { "$@" 2>/dev/null | tee -a "$out"; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run target/baseline/release/ractor_cluster_bench local --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD"
run target/baseline/release/ractor_cluster_bench --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD"
run cargo bench -q --bench two_process -- --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD"
# The same with both nodes on a current-thread runtime (the baseline cannot be asked to).
run cargo bench -q --bench two_process -- --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD" \
  --runtime current-thread
# And with one current-thread runtime per core, each connection on one of them.
run cargo bench -q --bench two_process -- --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD" \
  --runtime thread-per-core

figure() { awk -v label="$1" -v key="$2" '$1 == label { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$out"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rl_cast=$(figure ractor_local cast_throughput_msgs_per_s)
rc_cast=$(figure ractor_cluster cast_throughput_msgs_per_s)
rc_p50=$(figure ractor_cluster call_latency_p50_us)
rc_p99=$(figure ractor_cluster call_latency_p99_us)
# The required lines (label duologue: tokio's default runtime, as the baseline), then the
# same for duologue_current_thread. duologue's sink takes a run of casts that arrived
# together as one mailbox message (opt-in batch delivery): cast_throughput; a sink that
# takes each alone: cast_one_by_one.
for label in duologue duologue_current_thread duologue_thread_per_core; do
  cast=$(figure "$label" cast_throughput_msgs_per_s)
  p50=$(figure "$label" call_latency_p50_us)
  p99=$(figure "$label" call_latency_p99_us)
  echo "ratio cast_throughput $label/ractor_local=$(ratio "$cast" "$rl_cast") $label/ractor_cluster=$(ratio "$cast" "$rc_cast")"
  single=$(figure "$label" cast_one_by_one_throughput_msgs_per_s)
  echo "ratio cast_one_by_one $label/ractor_local=$(ratio "$single" "$rl_cast") $label/ractor_cluster=$(ratio "$single" "$rc_cast")"
  echo "ratio call_p50 $label/ractor_cluster=$(ratio "$p50" "$rc_p50")"
  echo "ratio call_p99 $label/ractor_cluster=$(ratio "$p99" "$rc_p99")"
done

# Proto.Actor's remote benchmark method (pings answered by pongs, both directions
# counted): ractor in one process, ractor_cluster and duologue across two.
# duologue's echo and counter take a run of messages that arrived together as one mailbox
# message (opt-in batch delivery): pingpong; one mailbox message per message:
# pingpong_one_by_one.
rl_pp=$(figure ractor_local pingpong_msgs_per_s)
rc_pp=$(figure ractor_cluster pingpong_msgs_per_s)
for label in duologue duologue_current_thread duologue_thread_per_core; do
  for key in pingpong pingpong_one_by_one; do
    pp=$(figure "$label" "${key}_msgs_per_s")
    echo "ratio $key $label/ractor_cluster=$(ratio "$pp" "$rc_pp") $label/ractor_local=$(ratio "$pp" "$rl_pp")"
    # The same counts one way (pings only): half of both directions.
    echo "$key $label two_way_msgs_per_s=$pp one_way_msgs_per_s=$(awk -v v="$pp" 'BEGIN { printf "%.0f", v / 2 }')"
  done
done

# What metrics cost: both nodes with metrics on (--metrics on: an admin address each) and
# off, alternated ROUNDS times on this noisy machine; medians of cast throughput, and
# their ratio (the issue's bound: within 3 %).
ROUNDS=${ROUNDS:-5}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
off=(); on=()
for _ in $(seq "$ROUNDS"); do
  for metrics in off on; do
    line=$(cargo bench -q --bench two_process -- --casts "$CASTS" --calls "$CALLS" --payload "$PAYLOAD" --pings 0 \
      --metrics "$metrics" 2>/dev/null | grep -E '^duologue(_metrics)? ')
    echo "$line"
    cast=$(echo "$line" | tr ' ' '\n' | awk -F= '$1 == "cast_throughput_msgs_per_s" { print $2 }')
    if [ "$metrics" = on ]; then on+=("$cast"); else off+=("$cast"); fi
  done
done
off_median=$(printf '%s\n' "${off[@]}" | median)
on_median=$(printf '%s\n' "${on[@]}" | median)
echo "metrics_ab rounds=$ROUNDS cast_median_off=$off_median cast_median_on=$on_median on/off=$(ratio "$on_median" "$off_median")"

# duologue's own figures: a 1 000 000-cast burst against a consumer taking 50 000/s, and
# sessions at scale (10 000 idle, opening rate, 100 concurrent, one stalled).
run cargo bench -q --bench slow_consumer -- --casts "$CASTS" --rate 50000 --payload "$PAYLOAD"
run cargo bench -q --bench sessions
# Calls to started entities (three node processes) against the same calls to one named
# actor: its ratio lines end with the ratio.
cargo bench -q --bench entities -- --entities 11000 --calls 100000 --idle-s 1 2>/dev/null |
  grep -E '^entities: [0-9]+ calls' | tee -a "$out"
entity_ratio() { awk -v how="$1" 'index($0, how) && /ratio to the named actor/ { print $NF }' "$out"; }
echo "ratio entity_calls through_owner/named=$(entity_ratio "through each one's owner") through_the_nodes_in_turn/named=$(entity_ratio "nodes in turn")"

# Issue 29's targets, each from this run's figures (its targets are medians of three runs).
target() {
  # target NAME VALUE OP BOUND
  awk -v name="$1" -v v="$2" -v op="$3" -v bound="$4" 'BEGIN {
    met = (v == "" || v == "n/a") ? "n/a" : ((op == ">=" && v + 0 >= bound + 0) || (op == "<=" && v + 0 <= bound + 0)) ? "met" : "missed"
    printf "target %-44s %12s %s %-9s %s\n", name, v, op, bound, met
  }'
}
d_pp=$(figure duologue pingpong_msgs_per_s)
d_pp1=$(figure duologue pingpong_one_by_one_msgs_per_s)
target "pingpong/ractor_local (default runtime)" "$(ratio "$d_pp" "$rl_pp")" ">=" 1.5
target "pingpong msgs/s, both ways" "$d_pp" ">=" 2730000
target "pingpong_one_by_one/ractor_local" "$(ratio "$d_pp1" "$rl_pp")" ">=" 1.0
target "call_p50/ractor_cluster (default runtime)" "$(ratio "$(figure duologue call_latency_p50_us)" "$rc_p50")" "<=" 0.6
target "call_p99/ractor_cluster (default runtime)" "$(ratio "$(figure duologue call_latency_p99_us)" "$rc_p99")" "<=" 0.8
target "cast_one_by_one/ractor_local" "$(ratio "$(figure duologue cast_one_by_one_throughput_msgs_per_s)" "$rl_cast")" ">=" 1.0
target "10 000 idle sessions, node A MiB" "$(figure duologue node_a_rss_mib)" "<=" 160
target "10 000 idle sessions, node B MiB" "$(figure duologue node_b_rss_mib)" "<=" 160
target "sessions opened per second" "$(figure duologue sessions_opened_per_s)" ">=" 8000
stall=$(awk '$1 == "duologue" && $3 == "stall" { for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "ratio") print kv[2] } }' "$out")
target "others' rate with one stalled (>= 0.9)" "$stall" ">=" 0.9
target "others' rate with one stalled (<= 1.1)" "$stall" "<=" 1.1
target "entity calls through the owner/named actor" "$(entity_ratio "through each one's owner")" ">=" 0.8

# Instructions per message under callgrind (benches/instructions.sh): figures that do not
# move with the machine's load. Its own message counts (CASTS, CALLS and PINGS above are
# the timed runs'); INSTRUCTIONS=0 skips it.
if [ "${INSTRUCTIONS:-1}" != 0 ]; then
  env -u CASTS -u CALLS -u PINGS bash benches/instructions.sh
fi
