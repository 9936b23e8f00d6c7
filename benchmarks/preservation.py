"""What --preserve buys: ESD and ablation with and without it, measured by `erasectl evaluate`.

    python benchmarks/preservation.py [--concept "red circle"] [--methods esd,ablate] [--preserve auto|a,b,c] [--json out.json]

For each method, erases the concept twice from the embedded model (defaults; then with
--preserve), evaluates base and both checkpoints in one `erasectl evaluate` run with its default
protocol, and prints every surrounding concept's accuracy. "damage" is base accuracy minus erased
accuracy; the goal (issue 5): preservation halves the damage to the worst-hit surrounding concept
while the erased concept stays at most 10%. ``--preserve auto`` preserves evaluate's own default
surrounding concepts (for "red circle": the other colours' circles and red's other shapes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concept", default="red circle")
    parser.add_argument("--methods", default="esd,ablate")
    parser.add_argument("--anchor", default="shape")
    parser.add_argument("--preserve", default="auto")
    parser.add_argument(
        "--with-options", default="", help='more erase options for the preserving run, e.g. "--preserve-weight 10"'
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from typer.testing import CliRunner

    from erasectl.cli import app
    from erasectl.provenance import versions
    from erasectl.world.protocol import world_protocol

    runner = CliRunner()
    preserve = (
        ",".join(world_protocol(args.concept, None, None, None).surrounding)
        if args.preserve == "auto"
        else args.preserve
    )
    results = {
        "concept": args.concept,
        "anchor": args.anchor,
        "preserve": preserve,
        "with_options": args.with_options,
        "versions": versions(),
        "methods": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            anchor = ["--anchor", args.anchor] if method == "ablate" else []
            runs = {}
            for label, extra in (
                ("without", []),
                ("with --preserve", ["--preserve", preserve, *args.with_options.split()]),
            ):
                out = Path(tmp) / f"{method}-{'plain' if not extra else 'preserve'}"
                done = runner.invoke(
                    app,
                    [
                        "erase",
                        "--concept",
                        args.concept,
                        "--method",
                        method,
                        *anchor,
                        *extra,
                        "--out",
                        str(out),
                        "--quiet",
                        "--json",
                    ],
                )
                assert done.exit_code == 0, done.output
                runs[label] = (out.name, json.loads(done.stdout.strip().splitlines()[-1]))
            checkpoints = [
                arg
                for name, _ in runs.values()
                for arg in ("--checkpoint", str(Path(tmp) / name / "erased.safetensors"))
            ]
            done = runner.invoke(app, ["evaluate", *checkpoints, "--out", str(Path(tmp) / f"eval-{method}"), "--json"])
            assert done.exit_code in (0, 1), done.output
            metrics = json.loads(done.stdout.strip().splitlines()[-1])
            rows = {}
            for row in metrics["tables"]["per_concept"]:
                rows.setdefault(row["model"], {})[f"{row['role']}:{row['concept']}"] = row
            base = rows["base"]
            table = {}
            for label, (name, summary) in runs.items():
                mine = rows[name]
                damage = {
                    key.split(":", 1)[1]: round(base[key]["accuracy"] - mine[key]["accuracy"], 3)
                    for key in mine
                    if key.startswith("surrounding:")
                }
                table[label] = {
                    "wall_time_s": summary.get("wall_time_s"),
                    "erased_accuracy": mine[f"erased:{args.concept}"]["accuracy"],
                    "surrounding_accuracy": {
                        k.split(":", 1)[1]: v["accuracy"] for k, v in mine.items() if k.startswith("surrounding:")
                    },
                    "damage": damage,
                    "worst": max(damage.items(), key=lambda item: item[1]),
                }
            results["methods"][method] = {
                "base": {k.split(":", 1)[1]: v["accuracy"] for k, v in base.items()},
                "runs": table,
            }
            plain, kept = table["without"], table["with --preserve"]
            print(f"{method}: erase {args.concept!r}")
            concepts = list(plain["surrounding_accuracy"])
            print("  " + " | ".join(["", "erased", *concepts, "worst damage"]))
            print(
                "  "
                + " | ".join(
                    [
                        "base",
                        f"{base[f'erased:{args.concept}']['accuracy']:.2f}",
                        *(f"{base[f'surrounding:{c}']['accuracy']:.2f}" for c in concepts),
                        "-",
                    ]
                )
            )
            for label, row in table.items():
                print(
                    "  "
                    + " | ".join(
                        [
                            label,
                            f"{row['erased_accuracy']:.2f}",
                            *(f"{row['surrounding_accuracy'][c]:.2f}" for c in concepts),
                            f"{row['worst'][0]} {row['worst'][1]:.2f}",
                        ]
                    )
                )
            halved = (
                kept["damage"][plain["worst"][0]] <= plain["worst"][1] / 2 and kept["worst"][1] <= plain["worst"][1] / 2
            )
            print(
                f"  worst damage {plain['worst'][1]:.2f} -> {kept['worst'][1]:.2f} ({'halved' if halved else 'NOT halved'}); erased {kept['erased_accuracy']:.2f} (goal <= 0.10)"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
