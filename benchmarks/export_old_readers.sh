#!/usr/bin/env bash
# An exported diffusers folder read by the versions many tools still pin: transformers 4.54 and
# diffusers 0.32 in a venv of their own (torch 2.13.0), loading the folder with
# StableDiffusionPipeline.from_pretrained and drawing one image. About 2 minutes on 2 CPU cores.
# Results: benchmarks/results-export_old_readers.json.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python -m erasectl erase --concept circle --method uce --out "$work/run" --quiet
python -m erasectl export "$work/run" --format diffusers --out "$work/folder" --no-verify --quiet
python3 -m venv "$work/old"
"$work/old/bin/pip" install -q torch==2.13.0 "transformers==4.54.*" "diffusers==0.32.*" safetensors
exporter=$(python -c "import erasectl; print(erasectl.__version__)")
"$work/old/bin/python" - "$work/folder" benchmarks/results-export_old_readers.json "$exporter" <<'PY'
import json, sys

import diffusers, torch, transformers
from diffusers import StableDiffusionPipeline

folder, out, exporter = sys.argv[1], sys.argv[2], sys.argv[3]
pipeline = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
image = pipeline("a red circle", num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                 output_type="np", height=32, width=32).images[0]
result = {
    "versions": {"exported_by_erasectl": exporter, "transformers": transformers.__version__,
                 "diffusers": diffusers.__version__, "torch": torch.__version__},
    "loaded": True,
    "tokenizer": type(pipeline.tokenizer).__name__,
    "ids_of_a_red_circle": pipeline.tokenizer("a red circle").input_ids,
    "image_shape": list(image.shape),
}
print(json.dumps(result))
json.dump(result, open(out, "w"), indent=2)
PY
