from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import (
    ALLOW_PICKLE,
    BATCH_SIZE,
    DEVICE,
    DTYPE,
    HEIGHT,
    MODEL_CONFIG,
    NEGATIVE_PROMPT,
    REVISION,
    SCHEDULER,
    VARIANT,
    WIDTH,
    progress_bar,
    read_general_prompts,
    read_prompts,
    split_list,
    user_errors,
)
from erasectl.errors import UserError

EXIT_GATE = 1


def _gates(
    metrics: dict,
    max_erased: float | None,
    min_ratio: float | None,
    max_paraphrase: float | None,
    max_attack: float | None = None,
) -> list[dict]:
    results = []
    if max_attack is not None:
        for row in metrics["tables"].get("attacks", []):
            results.append(
                {
                    "gate": "max-attack-success",
                    "model": row["model"],
                    "concept": f"{row['concept']} ({row['attack']})",
                    "limit": max_attack,
                    "value": row["attack_success"],
                    "passed": row["attack_success"] <= max_attack,
                }
            )
    for row in metrics["tables"]["per_concept"]:
        if row["model"] == "base":
            continue
        if row["role"] == "erased" and max_erased is not None:
            results.append(
                {
                    "gate": "max-erased-accuracy",
                    "model": row["model"],
                    "concept": row["concept"],
                    "limit": max_erased,
                    "value": row["accuracy"],
                    "passed": row["accuracy"] <= max_erased,
                }
            )
        if row["role"] == "paraphrase" and max_paraphrase is not None:
            results.append(
                {
                    "gate": "max-paraphrase-accuracy",
                    "model": row["model"],
                    "concept": row["concept"],
                    "limit": max_paraphrase,
                    "value": row["accuracy"],
                    "passed": row["accuracy"] <= max_paraphrase,
                }
            )
        if (
            row["role"] == "surrounding"
            and row.get("split") == "held-out"
            and min_ratio is not None
            and row["ratio_to_base"] is not None
        ):
            results.append(
                {
                    "gate": "min-surrounding-ratio",
                    "model": row["model"],
                    "concept": row["concept"],
                    "limit": min_ratio,
                    "value": row["ratio_to_base"],
                    "passed": row["ratio_to_base"] >= min_ratio,
                }
            )
    if min_ratio is not None:
        # no held-out concept: the gate cannot be measured, and says so instead of passing
        for row in metrics["tables"]["erased_vs_surrounding"]:
            if row["model"] != "base" and row["held_out_surrounding"] == 0:
                results.append(
                    {
                        "gate": "min-surrounding-ratio",
                        "model": row["model"],
                        "concept": "(no held-out surrounding concept)",
                        "limit": min_ratio,
                        "value": None,
                        "passed": False,
                    }
                )
    return results


@user_errors
def evaluate(
    checkpoint: list[Path] = typer.Option(
        None,
        "--checkpoint",
        help="Erased checkpoint(s) (a .safetensors file or erase's run folder) to measure against their base; repeatable. Default: the newest in runs/.",
    ),
    concept: str = typer.Option(None, "--concept", help="The erased concept; default: the checkpoint's."),
    surrounding: str = typer.Option(
        None,
        "--surrounding",
        help="Comma-separated surrounding concepts; default for the embedded model: the other shapes.",
    ),
    auto_surrounding: int = typer.Option(
        None, "--auto-surrounding", help="Use the K nearest valid phrases in text-embedding space instead."
    ),
    neighbour_mode: str = typer.Option(
        "nearest",
        "--neighbour-mode",
        help="nearest, or gaussian (samples around the concept, each snapped to a valid phrase).",
    ),
    vocabulary: Path = typer.Option(
        None,
        "--vocabulary",
        help="Phrases to draw neighbours from, one per line; default: the tokenizer's whole words.",
    ),
    paraphrases: str = typer.Option(
        None,
        "--paraphrases",
        help="Comma-separated paraphrases of the concept; default for the embedded model: its synonym.",
    ),
    anchor: str = typer.Option(None, "--anchor", help="The anchor concept; default: the checkpoint's."),
    model: str = typer.Option(None, "--model", help="The base model; default: the checkpoint's."),
    judge: str = typer.Option(
        None,
        "--judge",
        help="A CLIPModel hub id or folder, or nudenet (with --prompts-csv); default: the embedded world judge.",
    ),
    general_prompts: Path = typer.Option(
        None,
        "--general-prompts",
        help="Captions (CSV with a prompt/caption column, e.g. COCO, or one per line) drawn by every model for FID/KID on the judge's features; default: the surrounding prompts.",
    ),
    prompts_csv: Path = typer.Option(
        None,
        "--prompts-csv",
        help="nudenet: prompts in the I2P CSV layout (prompt, evaluation_seed, evaluation_guidance).",
    ),
    n_per_prompt: int = typer.Option(8, "--n-per-prompt", help="Seeds per prompt."),
    seed: int = typer.Option(0, "--seed", help="The first seed."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    out: Path = typer.Option(None, "--out", help="Output folder; default: runs/evaluate-<time>."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already has files."),
    negative_prompt: str = NEGATIVE_PROMPT,
    height: int = HEIGHT,
    width: int = WIDTH,
    scheduler: str = SCHEDULER,
    dtype: str = DTYPE,
    batch_size: int = BATCH_SIZE,
    revision: str = REVISION,
    variant: str = VARIANT,
    max_erased_accuracy: float = typer.Option(
        None, "--max-erased-accuracy", help="Gate: fail (exit 1) if an erased model draws the concept more often."
    ),
    min_surrounding_ratio: float = typer.Option(
        None, "--min-surrounding-ratio", help="Gate: fail if a surrounding concept keeps less of its base accuracy."
    ),
    max_paraphrase_accuracy: float = typer.Option(
        None, "--max-paraphrase-accuracy", help="Gate: fail if a paraphrase still yields the concept more often."
    ),
    attack: str = typer.Option(
        None,
        "--attack",
        help="Also attack every erased model: soft-prompt, prompt-search, or both comma-separated (see erasectl attack); adds the attack success rate.",
    ),
    attack_budget_s: float = typer.Option(
        300.0, "--attack-budget-s", help="Seconds each attack may learn for, per model."
    ),
    attack_runs: int = typer.Option(
        1,
        "--attack-runs",
        help="Run each attack this many times per model, each from its own images and noise (seed + 1000 x run), judged on the same seeds; the success is their mean, with every run's and the worst.",
    ),
    max_attack_success: float = typer.Option(
        None,
        "--max-attack-success",
        help="Gate: fail if an attack makes an erased model draw the concept more often (with --attack-runs, on average over the runs).",
    ),
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or table."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json on stdout."),
) -> None:
    """Measure erasures one fixed way: erased-concept, surrounding and paraphrase accuracy, CLIP score, distances, cost."""
    from erasectl.checkpoint import ErasedCheckpoint, model_loaders
    from erasectl.distributed import is_main_process
    from erasectl.evaluation import EvaluationConfig, per_image_csv
    from erasectl.evaluation import evaluate as run
    from erasectl.files import check_output_dir, prepare_output_dir
    from erasectl.judge import ClipJudge
    from erasectl.models import inference_setup, latest_checkpoint, load_pipeline, model_profile, resolve_model
    from erasectl.report import write_report

    attacks = split_list(attack) if attack else []
    from erasectl.attacks import ATTACKS

    for name in attacks:
        if name not in ATTACKS:
            raise UserError(f"unknown --attack {name!r}; choose from {', '.join(ATTACKS)}")
    if attack_runs < 1:
        raise UserError(f"--attack-runs must be at least 1, got {attack_runs}")
    if max_attack_success is not None and not attacks:
        raise UserError("--max-attack-success needs --attack soft-prompt and/or prompt-search")
    for name, value in (
        ("--max-erased-accuracy", max_erased_accuracy),
        ("--min-surrounding-ratio", min_surrounding_ratio),
        ("--max-paraphrase-accuracy", max_paraphrase_accuracy),
        ("--max-attack-success", max_attack_success),
    ):
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"{name} is a share between 0 and 1, got {value}")
    if surrounding is not None and auto_surrounding is not None:
        raise UserError("pass --surrounding or --auto-surrounding, not both")
    if (judge == "nudenet") != (prompts_csv is not None):
        raise UserError("--judge nudenet and --prompts-csv go together: NudeNet judges a prompt set such as I2P")
    csv_rows = None
    if prompts_csv is not None:
        from erasectl.nudity import NudityJudge, read_prompt_csv

        csv_rows = read_prompt_csv(prompts_csv)
        nudity_judge = NudityJudge()
    named = list(checkpoint or [])
    if not named and concept is None and csv_rows is None:
        named = [latest_checkpoint()]
    checkpoints = [ErasedCheckpoint.load(p) for p in named]
    concept = concept or (checkpoints[0].recipe["concepts"][0] if checkpoints else None)
    if csv_rows is None and (not concept or not concept.strip()):
        raise UserError("no concept to evaluate; pass --concept or a --checkpoint")
    concept = " ".join((concept or "").split())
    anchor = anchor or (checkpoints[0].recipe.get("anchor") if checkpoints else None)
    base_name, _ = resolve_model(model or (checkpoints[0].base_model if checkpoints else None))
    out = check_output_dir(out or Path("runs") / time.strftime("evaluate-%Y%m%d-%H%M%S"), force)
    general_lines = read_general_prompts(general_prompts) if general_prompts is not None else None
    vocabulary_lines = None
    if vocabulary is not None:
        vocabulary_lines = read_prompts(None, str(vocabulary))

    base_config = model_config or (checkpoints[0].base_config if checkpoints else None)
    profile = model_profile(base_name, base_config)
    config = EvaluationConfig(
        n_per_prompt=n_per_prompt,
        seed=seed,
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
        batch_size=batch_size or profile.generation_batch_size,
    )
    base = load_pipeline(
        base_name, device=device, allow_pickle=allow_pickle, config=base_config, revision=revision, variant=variant
    )
    for erased in checkpoints:
        erased.check(base)
    inference_setup(base, dtype, scheduler, device)
    models = model_loaders(base, base_name, checkpoints)
    if csv_rows is not None:
        _evaluate_nudity(models, csv_rows, nudity_judge, config, out, force, quiet, as_json)
        return
    if auto_surrounding is not None:
        from erasectl.neighbours import find_neighbours

        surrounding_list = find_neighbours(base, concept, auto_surrounding, vocabulary_lines, neighbour_mode, seed=seed)
    else:
        surrounding_list = split_list(surrounding) if surrounding is not None else None
    paraphrase_list = split_list(paraphrases) if paraphrases is not None else None
    protocol = profile.protocol(concept, surrounding_list, paraphrase_list, anchor, judge)
    clip_judge = ClipJudge.load(judge, device=device)

    total = (
        len(models)
        * (sum(len(s.prompts) for s in protocol.prompt_sets()) + len(general_lines or []))
        * config.n_per_prompt
    )
    with progress_bar("evaluating", total, enabled=not (quiet or as_json)) as update:
        metrics, records = run(
            models,
            protocol,
            clip_judge,
            config,
            progress=lambda done, _: update(done),
            attribute_reader=profile.attribute_reader(clip_judge),
            general_prompts=general_lines,
        )
    if attacks:
        metrics["tables"]["attacks"] = _attack_models(
            models, protocol, clip_judge, config, attacks, attack_budget_s, profile, quiet or as_json, attack_runs
        )
        for row in metrics["tables"]["erased_vs_surrounding"]:
            found = {
                r["attack"]: r["attack_success"] for r in metrics["tables"]["attacks"] if r["model"] == row["model"]
            }
            if found:
                row["attack_success"] = found
    if not is_main_process():
        return
    metrics["gates"] = _gates(
        metrics, max_erased_accuracy, min_surrounding_ratio, max_paraphrase_accuracy, max_attack_success
    )
    prepare_output_dir(out, force)
    files = write_report(out, metrics, records, per_image_csv(records))
    if as_json:
        typer.echo(json.dumps(metrics))
    elif not quiet:
        _print_table(metrics, files["report"])
    failed = [g for g in metrics["gates"] if not g["passed"]]
    if failed:
        g = failed[0]
        figure = f"is {g['value']:.3f}" if g["value"] is not None else "cannot be measured"
        typer.echo(f"gate failed: {g['gate']} {g['limit']}: {g['model']} {g['concept']} {figure}", err=True)
        raise typer.Exit(EXIT_GATE)


def _attack_models(
    models, protocol, judge, config, attacks: list[str], budget_s: float, profile, quiet: bool, runs: int = 1
) -> list[dict]:
    """Each attack on each erased model, with evaluate's judge, protocol and seeds, ``runs`` times
    from images and noise of its own (one run's success moved by up to 25 points with them on the
    world's yellow: docs/tuning/advunlearn.md); the row holds their mean."""
    from erasectl.attacks import ATTACK_ROW, AttackConfig, pool_runs, run_attack

    rows = []
    base_load = models[0][1]
    for name, load, _ in models[1:]:
        judged: dict = {}  # the base's and the plain prompts' images, the same for every attack and run
        for kind in attacks:
            summaries = []
            for run in range(runs):
                attack_config = AttackConfig(seed=config.seed + 1000 * run, budget_s=budget_s)
                label = f"attacking {name} ({kind})" + (f", run {run + 1} of {runs}" if runs > 1 else "")
                with progress_bar(label, attack_config.progress_total(kind), enabled=not quiet) as update:
                    summary, _ = run_attack(
                        base_load,
                        load,
                        protocol.concept,
                        protocol,
                        judge,
                        kind,
                        attack_config,
                        config.seeds,
                        config.sampler(),
                        profile,
                        progress=lambda done, _, logs: update(done),
                        judged=judged,
                    )
                summaries.append(summary)
            rows.append({"model": name, **{k: v for k, v in pool_runs(summaries).items() if k in ATTACK_ROW}})
    return rows


def _evaluate_nudity(models, rows, judge, config, out: Path, force: bool, quiet: bool, as_json: bool) -> None:
    import csv
    import io

    from erasectl.evaluation import evaluate_nudity
    from erasectl.files import prepare_output_dir, write_atomically

    with progress_bar("evaluating (nudenet)", len(models) * len(rows), enabled=not (quiet or as_json)) as update:
        metrics, per_image = evaluate_nudity(models, rows, judge, config, progress=lambda done, _: update(done))
    prepare_output_dir(out, force)
    write_atomically(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(per_image[0]))
    writer.writeheader()
    writer.writerows(per_image)
    write_atomically(out / "per_image.csv", lambda tmp: tmp.write_text(buffer.getvalue()))
    if as_json:
        typer.echo(json.dumps(metrics))
    elif not quiet:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="NudeNet: images flagged, by convention")
        table.add_column("convention")
        for name in metrics["models"]:
            table.add_column(name, justify="right")
        for convention in next(iter(metrics["models"].values()))["conventions"]:
            table.add_row(
                convention, *[str(m["conventions"][convention]["flagged_images"]) for m in metrics["models"].values()]
            )
        Console().print(table)


def _print_table(metrics: dict, report: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"erasing '{metrics['protocol']['concept']}' judged by {metrics['judge']}")
    for column in ("model", "role", "concept", "accuracy", "base", "ratio", "CLIP score"):
        table.add_column(column, justify="left" if column in ("model", "role", "concept") else "right")
    for row in metrics["tables"]["per_concept"]:
        if row["model"] == "base":
            continue
        ratio = "" if row["ratio_to_base"] is None else f"{row['ratio_to_base']:.2f}"
        table.add_row(
            row["model"],
            row["role"],
            row["concept"],
            f"{row['accuracy']:.3f}",
            f"{row['base_accuracy']:.3f}",
            ratio,
            f"{row['clip_score']:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(f"report: {report}")
