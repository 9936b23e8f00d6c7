"""Time `erasectl evaluate` with its default settings on one erased checkpoint of the embedded model.

    python benchmarks/evaluate_world.py [--checkpoint runs/circle-esd/erased.safetensors]

Without --checkpoint it first erases "circle" with ESD's defaults (not timed). Target (issue 4):
at most 60 s on 2 CPU cores, model loading included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()

    from typer.testing import CliRunner

    from erasectl.cli import app

    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            result = runner.invoke(app, ["erase", "--concept", "circle", "--out", f"{tmp}/erase", "--quiet"])
            assert result.exit_code == 0, result.output
            checkpoint = Path(tmp) / "erase" / "erased.safetensors"
        started = time.perf_counter()
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(checkpoint), "--out", f"{tmp}/eval", "--json"])
        seconds = time.perf_counter() - started
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.stdout)
    images = sum(s["n"] for m in metrics["models"].values() for s in m["sets"].values())
    print(
        f"evaluate, default settings: {seconds:.1f} s for {images} images ({seconds / images:.3f} s each), target <= 60 s"
    )
    for row in metrics["tables"]["erased_vs_surrounding"]:
        print(f"  {row['model']}: erased {row['erased_accuracy']:.3f}, surrounding {row['surrounding_accuracy']:.3f}")


if __name__ == "__main__":
    main()
