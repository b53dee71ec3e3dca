#!/usr/bin/env bash
# Runs one measurement as N shard processes side by side on this machine, then merges them:
# the merge prints (and with MERGE_ARGS writes) exactly what one process over all points does.
#
#   examples/shards_local.sh N DIR measure unit|class|layer [MEASURE ARGS...]
#
#   N           shards (processes), each with RAYON_NUM_THREADS=${THREADS:-1} threads
#   DIR         where the partial results go: DIR/shard-I.partial (created; must not hold them)
#   MEMPRUNE    the memprune binary (default: memprune on PATH)
#   MERGE_ARGS  extra options for `memprune merge`, e.g. "--json out.json --csv out.csv"
#
# Example: examples/shards_local.sh 4 /tmp/run measure unit --points 1000 --views 10
set -euo pipefail
n=${1:?usage: shards_local.sh N DIR measure unit|class|layer [ARGS...]}
dir=${2:?usage: shards_local.sh N DIR measure unit|class|layer [ARGS...]}
shift 2
bin=${MEMPRUNE:-memprune}
mkdir -p "$dir"
pids=()
for ((i = 0; i < n; i++)); do
  # Each shard measures the positions floor(i*P/N)..floor((i+1)*P/N) of the run's points.
  RAYON_NUM_THREADS=${THREADS:-1} "$bin" "$@" -q --shard "$i/$n" --partial "$dir/shard-$i.partial" \
    > "$dir/shard-$i.log" 2>&1 &
  pids+=($!)
done
failed=0
for ((i = 0; i < n; i++)); do
  if ! wait "${pids[$i]}"; then
    echo "shard $i/$n failed: $(tail -n 1 "$dir/shard-$i.log")" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
partials=()
for ((i = 0; i < n; i++)); do partials+=("$dir/shard-$i.partial"); done
# shellcheck disable=SC2086 # MERGE_ARGS is a list of options
exec "$bin" merge "${partials[@]}" ${MERGE_ARGS:-}
