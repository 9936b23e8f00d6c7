"""Erase with every method's embedded-world defaults through the CLI, and compare the tensors with
an earlier run's: shows that a change to the code left what each method learns unchanged.

    python benchmarks/same_checkpoints.py --out DIR [--methods esd,uce] [--against OLD_DIR] [--json FILE]

Each method erases "circle" (ablate: anchor "shape") with its defaults at seed 0, into DIR/<method>.
With --against, each checkpoint's tensors are compared with OLD_DIR/<method>'s: same keys, and the
largest absolute difference (0.0 means bit-identical).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("esd", "ablate", "uce", "nullspace", "rece", "advunlearn")


def erase(method: str, out: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "erasectl",
        "erase",
        "--concept",
        "circle",
        "--method",
        method,
        "--out",
        str(out),
        "--force",
        "--quiet",
    ]
    if method == "ablate":
        command += ["--anchor", "shape"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return round(time.perf_counter() - started, 1)


def compare(new: Path, old: Path) -> dict:
    from safetensors.torch import load_file

    a, b = load_file(new / "erased.safetensors"), load_file(old / "erased.safetensors")
    if set(a) != set(b):
        return {"same_keys": False, "only_new": sorted(set(a) - set(b))[:5], "only_old": sorted(set(b) - set(a))[:5]}
    largest = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {
        "same_keys": True,
        "tensors": len(a),
        "max_abs_difference": largest,
        "bit_identical": all(a[k].equal(b[k]) for k in a),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--against", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    for method in args.methods.split(","):
        row = {"seconds": erase(method, args.out / method)}
        if args.against is not None:
            row.update(compare(args.out / method, args.against / method))
        rows[method] = row
        print(method, json.dumps(row), flush=True)
    if args.json is not None:
        from erasectl.provenance import versions

        args.json.write_text(
            json.dumps({"methods": rows, "against": str(args.against), "versions": versions()}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
