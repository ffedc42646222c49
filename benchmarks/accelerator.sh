#!/usr/bin/env bash
# One short accelerator run (< 8 min): installs the `gpu` extra, then runs
# benchmarks/accelerator.py (encode/decode + train step in float32 and bfloat16, MFU of the
# TiTok-B-64 stage-1 step at the largest batch that fits) and writes ONE JSON.
#
#   bash benchmarks/accelerator.sh [OUT.json]        # default: $OUT/accelerator.json or ./
#
# Env: JAXTOK_EXTRA=gpu|tpu (default gpu), SKIP_INSTALL=1 to use the current environment,
# ACC_TIMEOUT=seconds for the Python part (default 420: the JSON is rewritten after every
# part, so a timeout keeps what finished).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}/accelerator.json}"
mkdir -p "$(dirname "$out")"
extra="${JAXTOK_EXTRA:-gpu}"
t0=$(date +%s)
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  python -m pip install -q -e ".[${extra}]" 2>&1 | tail -n 3
fi
python - <<'PY'
import jax
print("jax", jax.__version__, "devices:", jax.devices())
PY
echo "install + check: $(( $(date +%s) - t0 )) s"
# Persistent compilation cache: a rerun on the same machine skips most compiles.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxtok_jax_cache}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # Let the MFU batch search see real OOMs.
PYTHONPATH=. timeout "${ACC_TIMEOUT:-420}" python benchmarks/accelerator.py --out "$out" \
  || echo "accelerator.py ended with status $? (partial JSON kept in $out)"
echo "total: $(( $(date +%s) - t0 )) s; wrote $out"
