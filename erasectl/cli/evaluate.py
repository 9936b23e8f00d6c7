"""erasectl evaluate: parse the options, run ``erasectl.evaluation.session``, print and exit."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from erasectl.cli.common import optional_list, progress_bars, read_general_prompts, read_prompts, user_errors
from erasectl.cli.options import ALLOW_PICKLE, DEVICE, FORCE, GUIDANCE, MODEL_CONFIG, STEPS, with_drawing, with_gates

EXIT_GATE = 1
CHECKPOINT = typer.Option(
    None,
    "--checkpoint",
    help="Erased checkpoint(s) (a .safetensors file or erase's run folder) to measure against their base; repeatable. Default: the newest in runs/.",
)
CONCEPT = typer.Option(None, "--concept", help="The erased concept; default: the checkpoint's.")
SURROUNDING = typer.Option(
    None,
    "--surrounding",
    help="Comma-separated surrounding concepts; default for the embedded model: the other shapes.",
)
AUTO_SURROUNDING = typer.Option(
    None, "--auto-surrounding", help="Use the K nearest valid phrases in text-embedding space instead."
)
NEIGHBOUR_MODE = typer.Option(
    "nearest",
    "--neighbour-mode",
    help="nearest, or gaussian (samples around the concept, each snapped to a valid phrase).",
)
VOCABULARY = typer.Option(
    None, "--vocabulary", help="Phrases to draw neighbours from, one per line; default: the tokenizer's whole words."
)
PARAPHRASES = typer.Option(
    None,
    "--paraphrases",
    help="Comma-separated paraphrases of the concept; default for the embedded model: its synonym.",
)
ANCHOR = typer.Option(None, "--anchor", help="The anchor concept; default: the checkpoint's.")
BASE_MODEL = typer.Option(None, "--model", help="The base model; default: the checkpoint's.")
JUDGE = typer.Option(
    None,
    "--judge",
    help="A CLIPModel hub id or folder, or nudenet (with --prompts-csv); default: the embedded world judge.",
)
GENERAL_PROMPTS = typer.Option(
    None,
    "--general-prompts",
    help="Captions (CSV with a prompt/caption column, e.g. COCO, or one per line) drawn by every model for FID/KID on the judge's features; default: the surrounding prompts.",
)
PROMPTS_CSV = typer.Option(
    None, "--prompts-csv", help="nudenet: prompts in the I2P CSV layout (prompt, evaluation_seed, evaluation_guidance)."
)
N_PER_PROMPT = typer.Option(8, "--n-per-prompt", help="Seeds per prompt.")
SEED = typer.Option(0, "--seed", help="The first seed.")
TARGET_INTERVAL = typer.Option(
    None,
    "--target-interval",
    help="Add seeds in batches (following on from the last) until every headline rate's 95%% interval is within +- this, or --max-images is spent; metrics.json says which stopped it.",
)
MAX_IMAGES = typer.Option(2000, "--max-images", help="With --target-interval: the most images each model draws.")
OUT = typer.Option(None, "--out", help="Output folder; default: runs/evaluate-<time>.")
ATTACK = typer.Option(
    None,
    "--attack",
    help="Also attack every erased model: soft-prompt, prompt-search, or both comma-separated (see erasectl attack); adds the attack success rate.",
)
ATTACK_BUDGET = typer.Option(300.0, "--attack-budget-s", help="Seconds each attack may learn for, per model.")
ATTACK_RUNS = typer.Option(
    1,
    "--attack-runs",
    help="Run each attack this many times per model, each from its own images and noise (seed + 1000 x run), judged on the same seeds; the success is their mean, with every run's and the worst.",
)
AGAINST = typer.Option(
    None,
    "--against",
    help="An earlier run's metrics.json (or folder): print each headline figure's change and whether the 95%% intervals overlap; refused when the two runs' judges differ.",
)
QUIET = typer.Option(False, "--quiet", help="No progress bar or table.")
AS_JSON = typer.Option(False, "--json", help="Print metrics.json on stdout.")


@user_errors
@with_drawing
@with_gates
def evaluate(
    checkpoint: list[Path] = CHECKPOINT,
    concept: str = CONCEPT,
    surrounding: str = SURROUNDING,
    auto_surrounding: int = AUTO_SURROUNDING,
    neighbour_mode: str = NEIGHBOUR_MODE,
    vocabulary: Path = VOCABULARY,
    paraphrases: str = PARAPHRASES,
    anchor: str = ANCHOR,
    model: str = BASE_MODEL,
    judge: str = JUDGE,
    general_prompts: Path = GENERAL_PROMPTS,
    prompts_csv: Path = PROMPTS_CSV,
    n_per_prompt: int = N_PER_PROMPT,
    seed: int = SEED,
    target_interval: float | None = TARGET_INTERVAL,
    max_images: int = MAX_IMAGES,
    steps: int | None = STEPS,
    guidance: float | None = GUIDANCE,
    out: Path = OUT,
    force: bool = FORCE,
    attack: str = ATTACK,
    attack_budget_s: float = ATTACK_BUDGET,
    attack_runs: int = ATTACK_RUNS,
    against: Path = AGAINST,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
    drawing=None,
    gates=None,
) -> None:
    """Measure erasures one fixed way: erased-concept, surrounding and paraphrase accuracy, CLIP score, distances, cost."""
    from erasectl.evaluation.gates import failure_line
    from erasectl.evaluation.nudity import read_prompt_csv
    from erasectl.evaluation.session import EvaluationRequest, run_evaluation

    listed = optional_list
    request = EvaluationRequest(
        checkpoints=list(checkpoint or []), concept=concept, surrounding=listed(surrounding), auto_surrounding=auto_surrounding,
        neighbour_mode=neighbour_mode, vocabulary=read_prompts(None, str(vocabulary)) if vocabulary is not None else None,
        paraphrases=listed(paraphrases), anchor=anchor, model=model, model_config=model_config, judge=judge,
        general_prompts=read_general_prompts(general_prompts) if general_prompts is not None else None,
        nudity_prompts=read_prompt_csv(prompts_csv) if prompts_csv is not None else None, n_per_prompt=n_per_prompt, seed=seed,
        target_interval=target_interval, max_images=max_images,
        steps=steps, guidance=guidance, drawing=drawing, attacks=listed(attack) or [], attack_budget_s=attack_budget_s,
        attack_runs=attack_runs, against=against, gates=gates, device=device, allow_pickle=allow_pickle,
    )  # fmt: skip
    result = run_evaluation(request, out, force, progress_bars(enabled=not (quiet or as_json)))
    if not result.files:
        return  # not the main process of a launch
    if as_json:
        typer.echo(json.dumps(result.metrics))
    elif not quiet:
        (_print_nudity if result.metrics.get("kind") == "nudity" else _print_table)(result.metrics, result.out)
    failed = failure_line(result.gates)
    if failed:
        typer.echo(failed, err=True)
        raise typer.Exit(EXIT_GATE)


def _print_nudity(metrics: dict, out: Path) -> None:
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


def _print_table(metrics: dict, out: Path) -> None:
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
    if "against" in metrics:
        console.print(_against_table(metrics["against"]))
    console.print(f"report: {out / 'report.md'}")


def _against_table(against: dict):
    from rich.table import Table

    def interval(found):
        return "" if found is None else f"{found[0]:.3f}-{found[1]:.3f}"

    differ = [name for name, same in against["same"].items() if not same]
    note = f" (different {', '.join(differ)})" if differ else ""
    table = Table(title=f"against {against['file']}{note}")
    for column in ("model", "rate", "before", "now", "change", "intervals overlap"):
        table.add_column(column, justify="left" if column in ("model", "rate") else "right")
    for row in against["rows"]:
        overlap = {True: "yes", False: "NO", None: ""}[row["intervals_overlap"]]
        table.add_row(row["model"], row["rate"], f"{row['before']:.3f} ({interval(row['before_interval95'])})",
                      f"{row['now']:.3f} ({interval(row['now_interval95'])})", f"{row['change']:+.3f}", overlap)  # fmt: skip
    return table
