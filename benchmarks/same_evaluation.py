"""Compare two evaluate runs of the same checkpoints: shows that a change to the code left every judged
figure unchanged (the wall times aside).

    python benchmarks/same_evaluation.py NEW_EVAL_DIR OLD_EVAL_DIR [--json FILE]

Both folders are `erasectl evaluate --out` folders of the same checkpoints with the same options,
one made by each version of the code. Prints whether every table of metrics.json but `timing` is
equal, and whether per_image.csv is equal row for row.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("old", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    new, old = (json.loads((folder / "metrics.json").read_text()) for folder in (args.new, args.old))
    tables = sorted(set(new["tables"]) | set(old["tables"]))
    differing = [name for name in tables if name != "timing" and new["tables"].get(name) != old["tables"].get(name)]
    rows = [list(csv.DictReader((folder / "per_image.csv").open())) for folder in (args.new, args.old)]
    from erasectl.provenance import versions

    result = {
        "tables_compared": [name for name in tables if name != "timing"],
        "tables_differing": differing,
        "per_image_rows": len(rows[0]),
        "per_image_equal": rows[0] == rows[1],
        "headline": {
            r["model"]: {k: r[k] for k in ("erased_accuracy", "surrounding_accuracy")}
            for r in new["tables"]["erased_vs_surrounding"]
        },
        "versions": {"new": versions(), "old": old["versions"]},
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
