#!/usr/bin/env bash
# The GPU measurements, unattended (one H100, torch 2.11 / triton 3.6 / transformers 5.17, nothing
# installed: the machine has no network). Results go to ${OUT:-bench_out}/; each step has its own time
# limit so one failure does not cost the rest. Steps: tests (~2 min), kernels (~3 min), docgen (~6 min);
# run them in two calls where one command may take at most 10 minutes:
#   OUT=/some/dir bash scripts/gpu_check.sh tests kernels
#   OUT=/some/dir bash scripts/gpu_check.sh docgen
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
run() {  # run NAME SECONDS CMD...: log to $OUT/NAME.log, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? ; tail:"; tail -n 12 "$OUT/$name.log" | sed 's/^/   /'
}
$PY -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())" > "$OUT/versions.txt" 2>&1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests kernels docgen)
for step in "${steps[@]}"; do
  case $step in
    tests) run gpu_tests 150 $PY -m pytest -q -x tests/engine/test_triton_attention.py tests/engine/test_triton_engine.py ;;
    kernels)
      run attention_kernels 150 $PY benchmarks/attention_kernels.py --json "$OUT/attention_kernels.json"
      run quant_kernels 90 $PY benchmarks/quant_kernels.py --device cuda --json "$OUT/quant_kernels_cuda.json" ;;
    docgen) run gpu_docgen 480 $PY benchmarks/gpu_docgen.py --json "$OUT/gpu_docgen.json" ;;
    *) echo "unknown step $step (tests | kernels | docgen)"; exit 2 ;;
  esac
done
