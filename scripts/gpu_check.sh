#!/usr/bin/env bash
# The GPU measurements, unattended (one H200, torch 2.11 / triton 3.6 / transformers 5.17, nothing
# installed, no network). Results go to ${OUT:-bench_out}/; every step has its own time limit, well
# under the device's 10-minute command limit, so one failure does not cost the rest:
#   tests    the Triton kernel tests, then the engine tests (fast path vs torch_ref)   ~2-3 min
#   kernels  attention and quantized-linear kernel benchmarks                          ~3 min
#   docgen   7B-shaped checkpoint, our engine, fast-path agreement                     ~5 min
#   hf       transformers generate_batch on the same checkpoint (cold and warm)        ~4 min
# e.g.  OUT=/some/dir bash scripts/gpu_check.sh tests kernels ; OUT=/some/dir bash scripts/gpu_check.sh docgen hf
# `all` = every step. The checkpoint lives in $CKPT_DIR (not under $OUT) from docgen to hf; hf deletes it.
#
# --dry-run: the same steps end to end on the CPU with tiny shapes (Triton under the interpreter),
# writing the same files with the same keys; the tests step only collects the GPU tests there (the
# test suite runs them on the CPU anyway). CI runs `--dry-run all` (tests/test_gpu_check.py).
set -u
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
CKPT_DIR=${CKPT_DIR:-${TMPDIR:-/tmp}/gpu_check_ckpt}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # no network: never try a hub download (kernels, configs)
if [ $DRY = 1 ]; then export TRITON_INTERPRET=1; CKPT_DIR=$OUT/.dry_ckpt; fi
status=0
run() {  # run NAME SECONDS CMD...: log to $OUT/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && status=1
  echo "   exit $rc after $((SECONDS - t0)) s; tail:"; tail -n 12 "$OUT/$name.log" | sed 's/^/   /'
  echo "$name exit=$rc seconds=$((SECONDS - t0))" >> "$OUT/steps.txt"
}
$PY -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (dry run)')" > "$OUT/versions.txt" 2>&1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels docgen hf)
[ "${steps[*]}" = "all" ] && steps=(tests kernels docgen hf)
if [ $DRY = 1 ]; then
  PYTEST_ARGS=(--collect-only -q); AK=(--tiny --no-sweep); QK=(--device cpu --n 64 --k 128 --ms 1,16 --min-s 0.005)
  DG=(--dry-run --phase-timeout 100)
else
  PYTEST_ARGS=(-q --durations=10); AK=(); QK=(--device cuda); DG=(--phase-timeout 420)
fi
for step in "${steps[@]}"; do
  case $step in
    tests)  # two runs: a kernel-test failure must not keep the engine tests from running
      run gpu_tests_attention 240 $PY -m pytest "${PYTEST_ARGS[@]}" tests/engine/test_triton_attention.py
      run gpu_tests_engine 150 $PY -m pytest "${PYTEST_ARGS[@]}" tests/engine/test_triton_engine.py ;;
    kernels)
      run attention_kernels 160 $PY benchmarks/attention_kernels.py "${AK[@]}" --timeout 150 --json "$OUT/attention_kernels.json"
      run quant_kernels 100 $PY benchmarks/quant_kernels.py "${QK[@]}" --timeout 90 --json "$OUT/quant_kernels_cuda.json" ;;
    docgen) run gpu_docgen 540 $PY benchmarks/gpu_docgen.py "${DG[@]}" --time-budget 500 --phases engine,agreement --workdir "$CKPT_DIR" \
              --keep-checkpoint --json "$OUT/gpu_docgen.json" ;;
    hf) run gpu_docgen_hf 480 $PY benchmarks/gpu_docgen.py "${DG[@]}" --time-budget 440 --phases transformers --workdir "$CKPT_DIR" \
          --json "$OUT/gpu_docgen.json" ;;
    *) echo "unknown step $step (tests | kernels | docgen | hf | all)"; exit 2 ;;
  esac
done
exit $status
