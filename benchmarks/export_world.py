"""Does an exported erasure still erase once its consumer loads it? Judge figures per format.

    python benchmarks/export_world.py [--checkpoint runs/circle-esd/erased.safetensors]

Exports the checkpoint (default: a fresh ESD erasure of "circle") in every format, reloads each
with its consumer's own loader (from_pretrained, from_single_file, load_lora_weights) and judges
`a <colour> <shape>` prompts, 8 seeds x 4 colours per shape, beside erasectl's own erased model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from diffusers import StableDiffusionPipeline
    from typer.testing import CliRunner

    from erasectl.assets import embedded_pipeline_dir
    from erasectl.cli import app
    from erasectl.judge import ClipJudge
    from erasectl.models import load_erased_pipeline, load_pipeline
    from erasectl.provenance import versions
    from erasectl.world.judging import shape_report

    runner = CliRunner()
    judge = ClipJudge.load()
    seeds = list(range(1000, 1008))
    results = {"versions": versions(), "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            done = runner.invoke(app, ["erase", "--concept", "circle", "--out", f"{tmp}/erase", "--quiet"])
            assert done.exit_code == 0, done.output
            checkpoint = Path(tmp) / "erase" / "erased.safetensors"
        rows = {"base": load_pipeline(), "erasectl": load_erased_pipeline(checkpoint)}
        for kind in ("diffusers", "single-file", "lora", "kohya"):
            out = Path(tmp) / kind
            done = runner.invoke(app, ["export", str(checkpoint), "--format", kind, "--out", str(out), "--json"])
            assert done.exit_code == 0, done.output
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            if kind == "diffusers":
                pipeline = StableDiffusionPipeline.from_pretrained(out)
            elif kind == "single-file":
                pipeline = StableDiffusionPipeline.from_single_file(
                    summary["file"], config=str(embedded_pipeline_dir()), local_files_only=True
                )
            else:
                pipeline = StableDiffusionPipeline.from_pretrained(embedded_pipeline_dir())
                pipeline.load_lora_weights(str(out), weight_name=Path(summary["file"]).name)
            pipeline.set_progress_bar_config(disable=True)
            rows[f"{kind} (reloaded)"] = pipeline
        for name, pipeline in rows.items():
            report = shape_report(pipeline, judge, seeds)
            results["formats"][name] = {s: r["accuracy"] for s, r in report.items()}
            print(f"{name:24s} " + ", ".join(f"{s} {r['accuracy']:.2f}" for s, r in report.items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
