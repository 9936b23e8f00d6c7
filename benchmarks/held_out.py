"""Every erasure figure of docs/held-out.md under the held-out protocol, measured by `erasectl evaluate`.

    python benchmarks/held_out.py [--cases all|name,name] [--seeds 24] [--first-seed 0] [--json benchmarks/results-held_out.json]

Each case erases a concept from the embedded model with the options named, then one `erasectl
evaluate` run per concept judges base and every checkpoint with evaluate's default protocol:
96 images per shape for single shapes (24 seeds x 4 colours), 24 per two-word prompt. Surrounding
concepts the erasure preserved (named or by default) are reported apart; the headline is over the
held-out ones, whose split each case names. Seeds 0-23 are not the tuning seeds (100-107, on square)
of the embedded model's UCE defaults.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# concept -> [(case name, erase options)]
CASES: dict[str, list[tuple[str, list[str]]]] = {
    "circle": [
        ("esd defaults", ["--method", "esd"]),
        ("ablate defaults, --anchor shape", ["--method", "ablate", "--anchor", "shape"]),
        ("uce defaults", ["--method", "uce"]),
        ("uce --preserve square,triangle", ["--method", "uce", "--preserve", "square,triangle"]),
        ("uce --preserve cross,ring", ["--method", "uce", "--preserve", "cross,ring"]),
        ('uce --preserve "a red square"', ["--method", "uce", "--preserve", "a red square"]),
        (
            "uce --preserve square,triangle --guide-choice nearest-preserved (the issue's case as filed)",
            ["--method", "uce", "--preserve", "square,triangle", "--guide-choice", "nearest-preserved"],
        ),
        (
            'uce --preserve "a red square" --guide-choice nearest-preserved (as filed)',
            ["--method", "uce", "--preserve", "a red square", "--guide-choice", "nearest-preserved"],
        ),
        ("nullspace defaults", ["--method", "nullspace"]),
        (
            "nullspace --prior-exclude cross,ring,plus,hoop",
            ["--method", "nullspace", "--prior-exclude", "cross,ring,plus,hoop"],
        ),
        (
            "nullspace --prior-exclude square,triangle,box,wedge",
            ["--method", "nullspace", "--prior-exclude", "square,triangle,box,wedge"],
        ),
        ("rece defaults", ["--method", "rece"]),
    ],
    "blue square": [
        ("esd defaults", ["--method", "esd"]),
        ('ablate defaults, --anchor "blue shape"', ["--method", "ablate", "--anchor", "blue shape"]),
        ("uce defaults", ["--method", "uce"]),
        ("nullspace defaults", ["--method", "nullspace"]),
        ("rece defaults", ["--method", "rece"]),
    ],
    "red circle": [
        ("esd defaults", ["--method", "esd"]),
        (
            "esd --preserve green circle,blue circle,red square,red triangle",
            ["--method", "esd", "--preserve", "green circle,blue circle,red square,red triangle"],
        ),
        ('ablate --anchor "red shape"', ["--method", "ablate", "--anchor", "red shape"]),
        (
            'ablate --anchor "red shape" --preserve green circle,blue circle,red square,red triangle',
            [
                "--method",
                "ablate",
                "--anchor",
                "red shape",
                "--preserve",
                "green circle,blue circle,red square,red triangle",
            ],
        ),
        ("uce defaults", ["--method", "uce"]),
        ("nullspace defaults", ["--method", "nullspace"]),
        ("rece defaults", ["--method", "rece"]),
    ],
    "striped": [
        ("esd defaults", ["--method", "esd"]),
        ("ablate --anchor plain", ["--method", "ablate", "--anchor", "plain"]),
        ("uce defaults", ["--method", "uce"]),
        ("nullspace defaults", ["--method", "nullspace"]),
        ("rece defaults", ["--method", "rece"]),
    ],
    **{
        shape: [
            ("esd defaults", ["--method", "esd"]),
            ("ablate defaults, --anchor shape", ["--method", "ablate", "--anchor", "shape"]),
            ("uce defaults", ["--method", "uce"]),
            ("nullspace defaults", ["--method", "nullspace"]),
            ("rece defaults", ["--method", "rece"]),
        ]
        for shape in ("square", "triangle", "cross", "ring")
    },
}
# a style is drawn on 20 colour x shape prompts: 5 seeds give 100 images per set
SEEDS = {"striped": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="all",
        help="all, or concepts (circle, blue square, red circle, striped, square, ...) separated by ';'",
    )
    parser.add_argument("--methods", default=None, help="only these methods, e.g. uce,nullspace")
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from typer.testing import CliRunner

    from erasectl.cli import app
    from erasectl.provenance import versions

    runner = CliRunner()
    concepts = list(CASES) if args.cases == "all" else [c.strip() for c in args.cases.split(";")]
    results = {"seeds": [args.first_seed, args.first_seed + args.seeds - 1], "versions": versions(), "concepts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for concept in concepts:
            cases = [(n, o) for n, o in CASES[concept] if args.methods is None or o[1] in args.methods.split(",")]
            checkpoints, erased = [], {}
            for index, (name, options) in enumerate(cases):
                out = Path(tmp) / f"{concept.replace(' ', '_')}-{index}"
                started = time.perf_counter()
                done = runner.invoke(
                    app, ["erase", "--concept", concept, *options, "--out", str(out), "--quiet", "--json"]
                )
                assert done.exit_code == 0, done.output
                recipe = json.loads(done.stdout.strip().splitlines()[-1])
                erased[out.name] = {
                    "case": name,
                    "erase_wall_s": round(time.perf_counter() - started, 1),
                    "method_wall_s": recipe.get("wall_time_s"),
                    "preserved": recipe.get("preserved") or recipe.get("preserve"),
                    "guides": recipe.get("guides"),
                }
                checkpoints += ["--checkpoint", str(out / "erased.safetensors")]
            started = time.perf_counter()
            seeds = min(args.seeds, SEEDS.get(concept, args.seeds))
            done = runner.invoke(
                app,
                [
                    "evaluate",
                    *checkpoints,
                    "--n-per-prompt",
                    str(seeds),
                    "--seed",
                    str(args.first_seed),
                    "--out",
                    str(Path(tmp) / f"eval-{concept.replace(' ', '_')}"),
                    "--json",
                ],
            )
            assert done.exit_code == 0, done.output
            metrics = json.loads(done.stdout.strip().splitlines()[-1])
            per_model = {}
            for row in metrics["tables"]["per_concept"]:
                per_model.setdefault(row["model"], {})[f"{row['role']}:{row['concept']}"] = {
                    k: row.get(k)
                    for k in (
                        "split",
                        "in_prior",
                        "accuracy",
                        "colour_accuracy",
                        "style_accuracy",
                        "outline_accuracy",
                        "judge_distance",
                        "ssim",
                    )
                }
            headline = {row["model"]: row for row in metrics["tables"]["erased_vs_surrounding"]}
            distribution = {row["model"]: row for row in metrics["tables"]["distribution"]}
            replacement = {(r["model"], r["role"]): r for r in metrics["tables"]["replacement"]}
            results["concepts"][concept] = {
                "evaluate_wall_s": round(time.perf_counter() - started, 1),
                "seeds_per_prompt": seeds,
                "warnings": metrics["warnings"],
                "base": {"sets": per_model["base"], "headline": headline["base"]},
                "cases": [
                    {
                        **info,
                        "headline": headline[name],
                        "sets": per_model[name],
                        "distribution": distribution.get(name),
                        "replacement": replacement.get((name, "erased")),
                    }
                    for name, info in erased.items()
                ],
            }
            for info in results["concepts"][concept]["cases"]:
                h = info["headline"]
                print(
                    f"{concept:12s} {info['case']:70s} erased {h['erased_accuracy']:.3f} held-out {h['surrounding_accuracy']} "
                    f"colour {h['held_out_colour_accuracy']} drift {h['held_out_judge_distance']} ssim {h['held_out_ssim']} "
                    f"preserved {h['preserved_surrounding_accuracy']} ({h['preserved_surrounding']})",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
