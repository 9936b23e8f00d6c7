from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import progress_bar, read_prompts, user_errors, warn_if_cut
from erasectl.cli.options import (
    ALLOW_PICKLE,
    AS_JSON,
    DEVICE,
    GUIDANCE,
    MODEL_CONFIG,
    PROMPTS,
    PROMPTS_FILE,
    QUIET,
    STEPS,
    with_drawing,
)  # fmt: skip
from erasectl.errors import UserError

MAX_SEEDS = 64  # columns per model in a grid
CHECKPOINT = typer.Option(None, "--checkpoint", help="Erased checkpoint(s), each a column group beside the base's; repeatable. Default: the newest in runs/.")  # fmt: skip
BASE_MODEL = typer.Option(None, "--model", help="The base model; default: the one named in the checkpoint.")
N = typer.Option(4, "--n", help="Seeds per prompt, the same in every model's columns.")
SEED = typer.Option(0, "--seed", help="The first seed.")
OUT = typer.Option(None, "--out", help="The grid PNG; default: runs/compare-<time>.png.")
FORCE = typer.Option(False, "--force", help="Replace an existing --out file.")


@user_errors
@with_drawing
def compare(
    prompts: str = PROMPTS,
    prompts_file: str = PROMPTS_FILE,
    checkpoint: list[Path] = CHECKPOINT,
    model: str = BASE_MODEL,
    n: int = N,
    seed: int = SEED,
    steps: int | None = STEPS,
    guidance: float | None = GUIDANCE,
    out: Path = OUT,
    force: bool = FORCE,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
    drawing=None,
) -> None:
    """Base and erased models side by side: prompts as rows, the same seeds in each model's columns."""
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.distributed import is_main_process
    from erasectl.generation import draw_comparison
    from erasectl.models import latest_checkpoint, load_base

    prompt_list = read_prompts(prompts, prompts_file)
    if not 1 <= n <= MAX_SEEDS:
        raise UserError(f"--n must be between 1 and {MAX_SEEDS} for a grid one can look at, got {n}; draw many images with erasectl generate")  # fmt: skip
    out = out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force")
    checkpoints = [ErasedCheckpoint.load(p) for p in checkpoint or [latest_checkpoint()]]
    loaded = load_base(checkpoints, model, model_config, drawing, device, allow_pickle)
    warn_if_cut(loaded.pipeline, prompt_list)
    settings = drawing.sampler(loaded.profile, steps, guidance, loaded.pipeline)
    total = len(prompt_list) * n * (len(checkpoints) + 1)
    with progress_bar("generating", total, enabled=not (quiet or as_json)) as update:
        summary = draw_comparison(loaded, checkpoints, prompt_list, list(range(seed, seed + n)), settings, out, update)
    if not is_main_process():
        return
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"wrote {out}")
