"""Does each erasure hold? Every method's defaults attacked by both attacks, through `erasectl evaluate --attack`.

    python benchmarks/attacks.py [--concepts "circle;blue square"] [--methods esd,ablate,uce,nullspace,rece] [--seeds 8] [--json benchmarks/results-attacks.json] [--keep DIR]

For each concept: erase with each method's defaults (ablation's anchor: the generic noun with the
concept's colour), then one `erasectl evaluate --attack soft-prompt,prompt-search` run judges base
and every checkpoint: erased accuracy, held-out neighbours, and the attack success rate of each
attack (the share of the erased model's images for the attack prompts that the judge reads as the
concept, on the evaluation seeds). Goals (issue 16): each attack within 5 minutes per checkpoint;
the robust methods (advunlearn; rece) at most 20% success for both attacks, held-out neighbours at
least 90% of base, in at most 3x the time of their base method (esd; uce).

    python benchmarks/attacks.py --methods esd,advunlearn --erase-seeds 0,1 --json benchmarks/results-attacks-advunlearn.json

The attacks that skip the prompt beside the text attacks (docs/attacks.md; its table printed by
`python benchmarks/attacks.py --table benchmarks/results-attacks-prompt-free.json`):

    python benchmarks/attacks.py --methods esd,ablate,uce,nullspace,rece,advunlearn --attacks soft-prompt,prompt-search,relearn,inversion,compose --json benchmarks/results-attacks-prompt-free.json

docs/attacks.md's table (every method, three attack runs, 16 seeds per prompt):

    python benchmarks/attacks.py --methods esd,ablate,uce,nullspace,rece,advunlearn --erase-seeds 0,1 --attack-runs 3 --seeds 16 --json benchmarks/results-attacks-all-methods.json

(Earlier world defaults: benchmarks/results-attacks-advunlearn-every-sample.json the same run with the
inner attack on every sample of the batch (`--attack-samples 0`), before t48;
benchmarks/results-attacks-advunlearn-attack-lr-1e-2.json the same run with
the inner attack at lr 1e-2, erase seeds 0 and 1; at erase seed 0,
benchmarks/results-attacks-advunlearn-200-iterations.json 200 iterations of it;
benchmarks/results-attacks-advunlearn-unet.json trained the
whole UNet, `--parameter-group esd-all --attack-steps 2`; results-attacks-advunlearn-attribute-retain.json
the text encoder at eta 1 with the attribute captions on the generic noun as the retain set, the
code of commit 4aa2418.)

Tuning runs: --concepts square --first-seed 100 --methods "advunlearn#a,advunlearn#b" with
--erase-args "advunlearn#a=--parameter-group esd-u" (one variant per METHOD#NAME). With
--erase-seeds 0,1 each variant is erased once per erase seed and its figures are also given as a
mean over them: one erase seed moved the default's tuning figures by 7-10 points (docs/tuning/advunlearn.md, run t40),
as much as most variants did. With --attack-runs K each attack runs K times per checkpoint from
images and noise of its own (evaluate's --attack-runs; the success is their mean, with the worst
run): on yellow one run's success moved by up to 25 points with its seeds (docs/tuning/advunlearn.md), so
a tuning decision needs several, and more judging seeds (--seeds).
The JSON is written after every concept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import tempfile
import time
from pathlib import Path

ANCHORS = {"circle": "shape", "square": "shape", "blue square": "blue shape", "red circle": "red shape"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the model to erase from (default: the embedded shapes-unet)")
    parser.add_argument("--concepts", default="circle;blue square")
    parser.add_argument("--methods", default="esd,ablate,uce,nullspace,rece")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--attacks",
        default="soft-prompt,prompt-search",
        help="evaluate's --attack: comma-separated attacks (add relearn,inversion,compose for those that skip the prompt)",
    )
    parser.add_argument(
        "--keep",
        default=None,
        help="a folder to write the checkpoints and evaluations to and keep (default: a temporary one)",
    )
    parser.add_argument(
        "--erase-seeds",
        default=None,
        help="comma-separated erase seeds: each method erased once per seed (its name then METHOD@SEED), with a mean row per method over them",
    )
    parser.add_argument(
        "--attack-runs",
        type=int,
        default=1,
        help="evaluate's --attack-runs: each attack run this many times per checkpoint, from images and noise of its own",
    )
    parser.add_argument(
        "--erase-args",
        action="append",
        default=[],
        help="METHOD[#VARIANT]=ARGS: more erase options for one method, split as a shell would, e.g. 'advunlearn#a=--preserve \"green shape,triangle\"' (tuning runs)",
    )
    args = parser.parse_args()

    from typer.testing import CliRunner

    from erasectl.cli import app
    from erasectl.provenance import versions

    runner = CliRunner()
    erase_seeds = [int(s) for s in args.erase_seeds.split(",")] if args.erase_seeds else [None]
    results = {
        "seeds": [args.first_seed, args.first_seed + args.seeds - 1],
        "erase_seeds": erase_seeds,
        "erase_args": args.erase_args,
        "model": args.model or "shapes-unet",
        "versions": versions(),
        "concepts": {},
    }
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as tmp:
        for concept in [c.strip() for c in args.concepts.split(";")]:
            checkpoints, erased = [], {}
            extra = dict(item.split("=", 1) for item in args.erase_args)
            for spec in args.methods.split(","):
                method = spec.split("#")[0]  # METHOD#VARIANT: one method under several --erase-args
                for seed in erase_seeds:
                    name = spec if seed is None else f"{spec}@{seed}"
                    out = Path(tmp) / f"{concept.replace(' ', '_')}-{name.replace('#', '-').replace('@', '-seed')}"
                    anchor = ["--anchor", ANCHORS.get(concept, "shape")] if method == "ablate" else []
                    seeded = [] if seed is None else ["--seed", str(seed)]
                    done = runner.invoke(
                        app,
                        [
                            "erase",
                            "--concept",
                            concept,
                            "--method",
                            method,
                            *anchor,
                            *shlex.split(extra.get(spec, "")),
                            *seeded,
                            *(["--model", args.model] if args.model else []),
                            "--out",
                            str(out),
                            "--quiet",
                            "--json",
                        ],
                    )
                    assert done.exit_code == 0, done.output
                    recipe = json.loads(done.stdout.strip().splitlines()[-1])
                    erased[out.name] = {"method": name, "erase_wall_s": recipe["wall_time_s"]}
                    checkpoints += ["--checkpoint", str(out / "erased.safetensors")]
            started = time.perf_counter()
            done = runner.invoke(
                app,
                [
                    "evaluate",
                    *checkpoints,
                    "--n-per-prompt",
                    str(args.seeds),
                    "--seed",
                    str(args.first_seed),
                    "--attack",
                    args.attacks,
                    "--attack-runs",
                    str(args.attack_runs),
                    "--out",
                    str(Path(tmp) / f"eval-{concept.replace(' ', '_')}"),
                    "--json",
                    "--quiet",
                ],
            )
            assert done.exit_code == 0, done.output
            metrics = json.loads(done.stdout.strip().splitlines()[-1])
            headline = {r["model"]: r for r in metrics["tables"]["erased_vs_surrounding"]}
            attacks = metrics["tables"]["attacks"]
            rows = []
            for name, info in erased.items():
                h = headline[name]
                mine = {a["attack"]: a for a in attacks if a["model"] == name}
                rows.append(
                    {
                        **info,
                        "erased_accuracy": h["erased_accuracy"],
                        "held_out_surrounding": h["surrounding_accuracy"],
                        "held_out_colour": h["held_out_colour_accuracy"],
                        "held_out_style": h["held_out_style_accuracy"],
                        "drift": h["held_out_judge_distance"],
                        "ssim": h["held_out_ssim"],
                        "held_out_attribute_gain": h.get("held_out_attribute_gain"),
                        "held_out_attribute_gain_read": h.get("held_out_attribute_gain_read"),
                        "erased_accuracy_interval95": h.get("erased_accuracy_interval95"),
                        **{f"{k}_success": v["attack_success"] for k, v in mine.items()},
                        **{f"{k}_interval95": v["attack_success_interval95"] for k, v in mine.items()},
                        **{f"{k}_details": v["details"] for k, v in mine.items() if v.get("details")},
                        **{f"{k}_wall_s": v["attack_wall_time_s"] for k, v in mine.items()},
                        **(
                            {f"{k}_runs": v["attack_success_runs"] for k, v in mine.items()}
                            if args.attack_runs > 1
                            else {}
                        ),
                        **(
                            {f"{k}_worst_run": v["attack_success_worst"] for k, v in mine.items()}
                            if args.attack_runs > 1
                            else {}
                        ),
                        "prompt_search_prefix": mine.get("prompt-search", {}).get("prefix"),
                    }
                )
                print(concept, json.dumps(rows[-1]), flush=True)
            results["concepts"][concept] = {
                "evaluate_wall_s": round(time.perf_counter() - started, 1),
                "base": headline["base"],
                "rows": rows,
                "base_attack_free_accuracy": headline["base"]["erased_accuracy"],
            }
            if len(erase_seeds) > 1:
                results["concepts"][concept]["means_over_erase_seeds"] = means = seed_means(rows)
                for row in means:
                    print(concept, "mean", json.dumps(row), flush=True)
            if args.json:  # after every concept: an interrupted run keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


MEANS = (
    "erase_wall_s",
    "erased_accuracy",
    "held_out_surrounding",
    "held_out_colour",
    "held_out_style",
    "drift",
    "ssim",
    "soft-prompt_success",
    "prompt-search_success",
    "soft-prompt_worst_run",
    "prompt-search_worst_run",
)


def seed_means(rows: list[dict]) -> list[dict]:
    """Each method's figures averaged over its erase seeds (rows named METHOD@SEED)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["method"].rsplit("@", 1)[0], []).append(row)
    return [
        {
            "method": method,
            "erase_seeds": len(group),
            **{
                key: round(sum(r[key] for r in group) / len(group), 4)
                for key in MEANS
                if all(r.get(key) is not None for r in group)
            },
        }
        for method, group in groups.items()
    ]


def markdown_table(results: dict) -> str:
    """One row per concept and method: every attack's success with its interval and seconds."""
    attacks = ["soft-prompt", "prompt-search", "relearn", "inversion", "compose"]
    lines = [
        "| concept | method | erased | held-out | " + " | ".join(attacks) + " | seconds (" + ", ".join(attacks) + ") |",
        "|---|---|---|---|" + "---|" * len(attacks) + "---|",
    ]
    for concept, found in results["concepts"].items():
        for row in found["rows"]:
            cells = []
            for kind in attacks:
                success, interval = row.get(f"{kind}_success"), row.get(f"{kind}_interval95")
                cells.append("" if success is None else f"{success:.2f} ({interval[0]:.2f}-{interval[1]:.2f})")
            seconds = ", ".join(f"{row[f'{kind}_wall_s']:.0f}" for kind in attacks if f"{kind}_wall_s" in row)
            held = row["held_out_surrounding"]
            lines.append(
                f"| {concept} | {row['method']} | {row['erased_accuracy']:.2f} | {held:.2f} | "
                + " | ".join(cells)
                + f" | {seconds} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--table"]:  # python benchmarks/attacks.py --table RESULTS.json
        print(markdown_table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
