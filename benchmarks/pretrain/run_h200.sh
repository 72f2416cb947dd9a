#!/usr/bin/env bash
# Reproduce the pretraining benchmark on a machine with H200s (or any CUDA GPUs):
#   bash benchmarks/pretrain/run_h200.sh STAGE OUT_DIR [DEVICES]
# STAGE: 1 (dense, lyactl, freeze, frontier, surgery bench), 2 (arms derived from lyactl-s0)
# or all. Needs ../shared/data (or .data) with corpus/ and eval/; python-control importable
# (a wheel in .whl/ is installed to /tmp/site if present). Job results go to /tmp/lyactl-run
# (kept between stages) and, as soon as the jobs end, to OUT_DIR/jobs_stageSTAGE.tgz; the merged
# results then to OUT_DIR/pretrain_h200.json.
# Optional: LYACTL_TIMEOUT (s for all jobs), LYACTL_MIN_START (start no job with less left),
# LYACTL_ONLY (job ids or arms); DEVICES may repeat an id ("0,0") to share one GPU.
set -uo pipefail
stage=${1:-all}; out=${2:-benchmarks/results}; devices=${3:-$(python3 -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD:$PWD/backends PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
data=.data; [ -d "$data" ] || data=../shared/data
run=/tmp/lyactl-run; mkdir -p "$run"
if [ -d .runs/h200 ]; then  # the carried records are the truth: a warm machine may hold records deleted since
  for f in "$run"/*.json; do [ -e "$f" ] && [ ! -e ".runs/h200/$(basename "$f")" ] && rm -f "$f"; done
  cp .runs/h200/*.json "$run"/ 2>/dev/null
fi
bench=""; [ "$stage" != 2 ] && bench="--bench"
python3 -m benchmarks.pretrain run --preset h200 --stage "$stage" $bench --data "$data" --devices "$devices" \
  --out "$run" --name pretrain_h200 --results "$out" --timeout "${LYACTL_TIMEOUT:-3000}" \
  --min-start "${LYACTL_MIN_START:-0}" ${LYACTL_ONLY:+--only "$LYACTL_ONLY"} --no-merge 2>&1 | tee "$out/run_stage$stage.log" | grep -v "^ "
cp "$run"/surgery_h200.json "$out"/ 2>/dev/null
# the job records first: the merge's bootstrap takes about a minute, and a caller's time limit
# that ends during it must not take the records with it
tar czf "$out/jobs_stage$stage.tgz" -C "$run" --exclude work --exclude '*.spec.json' --exclude 'warm-*' .
python3 -m benchmarks.pretrain merge --out "$run" --name pretrain_h200 --preset h200 --results "$out" 2>&1 | tee -a "$out/run_stage$stage.log"
for f in "$run"/*.log; do grep -qE "Traceback" "$f" && { echo "== $f"; grep -E "Error|Traceback" -A3 "$f" | tail -6; }; done
exit 0
