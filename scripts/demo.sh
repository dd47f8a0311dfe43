#!/usr/bin/env bash
# The main job: document the bundled example project end to end with the real engine.
# Uses the small trained docstring model from ../shared/models when this machine has it
# (its docs are short and often wrong: it is a 13M-parameter model), otherwise a tiny
# random-weight checkpoint built on the spot (gibberish docs: it only shows the pipeline works).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${DOCGEN_MODEL:-}
if [ -z "$MODEL" ]; then
  for m in ../shared/models/docstring-13m /work/shared/models/docstring-13m; do
    [ -f "$m/config.json" ] && MODEL=$m && break
  done
fi
if [ -z "$MODEL" ]; then
  MODEL=.docgen-demo-model
  echo "no trained model found: building a tiny random-weight checkpoint in $MODEL (its docs will be gibberish)"
  [ -f "$MODEL/config.json" ] || .venv/bin/python -c "from benchmarks.random_checkpoint import build_checkpoint; build_checkpoint('$MODEL', 'tiny')"
fi
OUT=${DOCGEN_OUT:-demo_docs}
rm -rf "$OUT" .docgen-demo-store
.venv/bin/docgen run examples/demo_project --model "$MODEL" --quantization none --out "$OUT" --store .docgen-demo-store/docgen.sqlite \
  --max-new-tokens 128 --plain "$@"
echo "Markdown written to $OUT/ (index: $OUT/index.md)"
