#!/usr/bin/env bash
# One prepared device check: scale at the Gemma-2-2B and 9B shapes, a correctness pass on the
# device, and the throughput benches; every figure goes into one JSON file.
#
#   bash bench/device_check.sh [--cpu-tiny] [--out results/device_check.json]
#
# Default (a CUDA machine): bench/scale.py at gemma-2-2b-16k and gemma-2-9b-131k (seq 2048,
# bf16: MFU against the device's bf16 peak, the 9B step's peak memory measured),
# bench/device_correctness.py on cuda, then bench/generate_throughput.py and
# bench/train_throughput.py on the default model. --cpu-tiny: the same steps on the CPU at the
# tiny shape, the throughput benches skipped (they need the real model): what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=results/device_check.json
TINY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-tiny) TINY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument $1 (use --cpu-tiny, --out FILE)" >&2; exit 2 ;;
  esac
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ $TINY == 1 ]]; then
  DEVICE=cpu
  "$PY" bench/scale.py --configs tiny --quick --device cpu --json "$TMP/scale.json"
else
  DEVICE=cuda
  "$PY" bench/scale.py --configs gemma-2-2b-16k,gemma-2-9b-131k --seq 2048 --device cuda \
    --dtype bfloat16 --json "$TMP/scale.json"
fi
"$PY" bench/device_correctness.py --device "$DEVICE" --json "$TMP/correctness.json" || true
if [[ $TINY == 0 ]]; then
  "$PY" bench/generate_throughput.py --json "$TMP/generate.json" | tee "$TMP/generate.txt"
  "$PY" bench/train_throughput.py | tee "$TMP/train.txt"
fi
"$PY" - "$TMP" "$OUT" "$DEVICE" <<'PYEOF'
import json, sys
from pathlib import Path

tmp, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rec = {"device": device}
for name in ("scale", "correctness", "generate"):
    f = tmp / f"{name}.json"
    rec[name] = json.loads(f.read_text()) if f.exists() else None
f = tmp / "train.txt"
rec["train_throughput"] = f.read_text().splitlines() if f.exists() else None
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(rec, indent=1))
ok = rec["correctness"] is not None and all(c["ok"] for c in rec["correctness"]["checks"].values())
print(f"wrote {out}; correctness {'ok' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PYEOF
