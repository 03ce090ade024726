#!/usr/bin/env bash
# The benchmark suite on a GPU machine: writes JSON and prints a table.
#
#   benchmarks/gpu.sh [--quick] [other options of fit_predict.py]
#
# Runs benchmarks/fit_predict.py (the small feedback net and the LSTM through
# fit/predict, against a hand-written JAX scan and PyTorch) with every
# framework installed: where TensorFlow is not installed, Keras runs on JAX
# (KERAS_BACKEND=jax) and the TensorFlow contenders are skipped. With
# TensorFlow, the TensorFlow-only scripts (benchmarks/run.py) run too.
# Results: $OUT (default benchmarks/results/gpu), fit_predict.json there; the
# GPU's name is in the JSON's "machine" entry. PYTHON picks the interpreter
# (default: .venv/bin/python if present, else python3); FRAMEWORKS overrides
# the list (comma-separated: tensorflow,jax,torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=${OUT:-benchmarks/results/gpu}
has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }
if [ -z "${FRAMEWORKS:-}" ]; then
    FRAMEWORKS=""
    for fw in tensorflow jax torch; do
        if has "$fw"; then FRAMEWORKS="$FRAMEWORKS${FRAMEWORKS:+,}$fw"; fi
    done
fi
case ",$FRAMEWORKS," in
    *,tensorflow,*) export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow} ;;
    *) export KERAS_BACKEND=jax ;;
esac
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "nvidia-smi not found: no NVIDIA GPU visible, the numbers are the CPU's"
fi
echo "frameworks: ${FRAMEWORKS:-none}; Keras backend: $KERAS_BACKEND; results in $OUT"
"$PYTHON" benchmarks/fit_predict.py --frameworks "$FRAMEWORKS" --out "$OUT" "$@"
case ",$FRAMEWORKS," in
    *,tensorflow,*) "$PYTHON" benchmarks/run.py --out "$OUT" "$@" ;;
esac
