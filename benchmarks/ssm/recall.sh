#!/usr/bin/env bash
# MQAR with the recall mixer (issue 14, task b), one command:
#   1. a learning-rate sweep of the full and the small state (seed 0): recall trains in a narrow window;
#   2. every arm at the rate where the full state recalled best (paired seeds, cuts at 25 % and 75 %,
#      lyactl capped at the modes random keeps).
#   bash benchmarks/ssm/recall.sh OUT                                    # one H200 (preset h200)
#   PRESET=tiny HEADS=2x4 SEEDS=0 bash benchmarks/ssm/recall.sh /tmp/x    # seconds on a CPU
set -euo pipefail
OUT=${1:?usage: recall.sh OUT}
A="--preset ${PRESET:-h200} --task mqar --kind recall --heads ${HEADS:-4x16} --out $OUT"
python -m benchmarks.ssm.run $A --name ssm_mqar_recall_sweep --arms full,small-scratch --lrs "${LRS:-2e-3,5e-3}" --seeds 0
LR=$(python -c '
import json, sys
arms = json.load(open(sys.argv[1]))["arms"]
print(max((a for a in arms if a["arm"] == "full"), key=lambda a: a["accuracy"])["lr"])' "$OUT/ssm_mqar_recall_sweep.json")
echo "rate: $LR"
python -m benchmarks.ssm.run $A --name ssm_mqar_recall --arms "${ARMS:-full,small-scratch,lyactl,random}" --lrs "$LR" \
    --cut-frac "${CUTS:-0.25,0.75}" --equal-modes --probe-cut --seeds "${SEEDS:-0,1,2}"
