#!/usr/bin/env bash
# Erase "circle" from the embedded model with each method, compare them, and gate on the result,
# as a CI job would. Exit codes: 0 all gates passed, 1 a gate failed, 2 a usage error.
set -euo pipefail
out=${1:-runs/example}
erasectl erase --concept circle --method esd --out "$out/esd" --quiet
erasectl erase --concept circle --method ablate --anchor shape --out "$out/ablate" --quiet
erasectl compare --prompts "a red circle,a blue ring,a green disc,a yellow square" --n 4 \
  --checkpoint "$out/esd/erased.safetensors" --checkpoint "$out/ablate/erased.safetensors" --out "$out/compare.png"
erasectl evaluate --checkpoint "$out/esd/erased.safetensors" --checkpoint "$out/ablate/erased.safetensors" \
  --out "$out/evaluate" --max-erased-accuracy 0.1 --min-surrounding-ratio 0.8
