#!/usr/bin/env bash
# UnitMem over a large training set as a Slurm job array, then the merge as a job that
# starts once every shard has succeeded. Submit from a folder every node sees:
#
#   examples/shards_slurm.sh            # submits both jobs and prints their ids
#
# Every shard computes the run's whole point list the same way (it depends on --seed and the
# data only) and measures its own contiguous part of it, so the shards can run on any nodes
# in any order; `memprune merge` checks that they belong together (same checkpoint, data,
# settings, seed; each shard once) and prints what one run over all points prints.
set -euo pipefail

SHARDS=${SHARDS:-64}               # array tasks = shards
MODEL=${MODEL:-encoder.pth}        # the encoder to measure
DATA=${DATA:-/datasets/imagenet}   # an image folder with train/ and test/ (or IDX, CIFAR)
OUT=${OUT:-$PWD/unitmem}           # partial results and the merged output
mkdir -p "$OUT"

# The array: --array=0-(N-1) with step 1, so that `--shard auto` reads shard
# SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT.
array=$(sbatch --parsable \
  --job-name=unitmem-shard \
  --array=0-$((SHARDS - 1)) \
  --cpus-per-task=16 --mem=32G --time=12:00:00 \
  --output="$OUT/shard-%a.log" \
  --wrap="RAYON_NUM_THREADS=\$SLURM_CPUS_PER_TASK memprune measure unit '$MODEL' \
    --data '$DATA' --points 1281167 --views 10 --seed 0 -q \
    --shard auto --partial '$OUT/shard-\$SLURM_ARRAY_TASK_ID.partial'")

# The merge: after every array task succeeded (afterok on the array's id waits for all).
merge=$(sbatch --parsable \
  --job-name=unitmem-merge \
  --dependency=afterok:"$array" \
  --cpus-per-task=1 --mem=8G --time=1:00:00 \
  --output="$OUT/merge.txt" \
  --wrap="memprune merge '$OUT'/shard-*.partial --json '$OUT/unitmem.json' --csv '$OUT/unitmem.csv'")
echo "array job $array ($SHARDS shards), merge job $merge: results in $OUT/merge.txt, unitmem.json, unitmem.csv"
