"""The two embedded worlds side by side: every method's defaults on the UNet model and on the MMDiT.

    python benchmarks/worlds_table.py [--unet benchmarks/results-attacks-all-methods.json]
        [--unet-held-out benchmarks/results-held_out.json] [--mmdit benchmarks/results-attacks-mmdit.json]
        [--concept circle]

Reads `benchmarks/attacks.py` results (one file per model; the MMDiT's made with `--model
shapes-mmdit`) and prints one markdown table: erased share, held-out shapes, held-out colour,
image drift, each attack's success and the erasure's time, per method and model. The UNet file of
an older run has no drift: it comes from the held-out run's row of the same defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = ("esd", "ablate", "uce", "nullspace", "rece", "advunlearn")


def rows_by_method(results: dict, concept: str) -> dict[str, dict]:
    """Each method's row: the mean over erase seeds where there are several, else its one row."""
    found = results["concepts"][concept]
    rows = found.get("means_over_erase_seeds") or found["rows"]
    return {row["method"].split("@")[0]: row for row in rows}


def held_out_drift(path: Path, concept: str) -> dict[str, float]:
    if not path.is_file():
        return {}
    cases = json.loads(path.read_text())["concepts"].get(concept, {}).get("cases", [])
    return {
        case["case"].split()[0]: case["headline"]["held_out_judge_distance"]
        for case in cases
        if case["case"].split()[1:2] == ["defaults"] or case["case"].startswith("ablate defaults")
    }


def cell(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if percent else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", type=Path, default=Path("benchmarks/results-attacks-all-methods.json"))
    parser.add_argument("--unet-held-out", type=Path, default=Path("benchmarks/results-held_out.json"))
    parser.add_argument("--mmdit", type=Path, default=Path("benchmarks/results-attacks-mmdit.json"))
    parser.add_argument("--concept", default="circle")
    args = parser.parse_args()

    worlds = {}
    for name, path in (("UNet", args.unet), ("MMDiT", args.mmdit)):
        results = json.loads(path.read_text())
        worlds[name] = (results, rows_by_method(results, args.concept))
    drift = held_out_drift(args.unet_held_out, args.concept)
    print(
        "| method | model | erased | held-out shapes | held-out colour | drift | soft-prompt | prompt-search | erase time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        for name, (_, rows) in worlds.items():
            row = rows.get(method)
            if row is None:
                continue
            moved = row.get("drift", drift.get(method) if name == "UNet" else None)
            print(
                f"| {method} | {name} | {cell(row['erased_accuracy'])} | {cell(row['held_out_surrounding'])} | "
                f"{cell(row['held_out_colour'], True)} | {cell(moved)} | {cell(row.get('soft-prompt_success'))} | "
                f"{cell(row.get('prompt-search_success'))} | {row['erase_wall_s']:.1f} s |"
            )
    for name, (results, _) in worlds.items():
        seeds = results["seeds"]
        print(f"\n{name}: seeds {seeds[0]}-{seeds[1]}, erase seeds {results['erase_seeds']}", end="")
    print()


if __name__ == "__main__":
    main()
