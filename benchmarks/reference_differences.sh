#!/usr/bin/env bash
# The README's "Against the reference code" figures: each of erasectl's differences from the
# authors' code switched back one at a time on the embedded world ("circle", 24 seeds x 4 colours
# = 96 images per shape, seeds 0-23), plus each method with the settings a real model gets.
# About 20 minutes on 2 CPU cores. Results: benchmarks/results-reference/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { local name=$1; shift; python benchmarks/erase_world.py --seeds 24 --first-seed 0 --json "benchmarks/results-reference/$name.json" "$@"; }
run world-defaults --methods esd,ablate,uce
run paper-settings --methods esd,ablate,uce --profile paper --set esd.mode=faithful-fp32
run esd-script-bf16 --methods esd --profile paper --set esd.mode=faithful --set esd.sample_size=0
run esd-script-fp32 --methods esd --profile paper --set esd.mode=faithful-fp32
run esd-eta1 --methods esd --set esd.negative_guidance=1.0
run esd-no-unconditional-term --methods esd --set esd.preserve_unconditional=0
run esd-faithful-loop --methods esd --set esd.mode=faithful --set esd.negative_guidance=0.5 --set esd.preserve_unconditional=1.0 --set esd.lr=1e-4
run ablate-away0 --methods ablate --set ablate.away=0
run ablate-no-filter --methods ablate --set ablate.filter_anchor_images=false
run uce-last-token --methods uce --set uce.token_positions=last
run uce-empty-guide --methods uce --set uce.guide_choice=empty
run uce-lamb05 --methods uce --set uce.lamb=0.5
