from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import EXIT_INTERRUPTED, progress_bar, read_prompts, stop_signals, user_errors, warn_if_cut
from erasectl.cli.options import (
    ALLOW_PICKLE,
    AS_JSON,
    DEVICE,
    FORCE,
    GUIDANCE,
    MODEL,
    MODEL_CONFIG,
    PROMPTS,
    PROMPTS_FILE,
    QUIET,
    STEPS,
    with_drawing,
)  # fmt: skip
from erasectl.errors import UserError

N = typer.Option(4, "--n", help="Images per prompt; seeds are --seed, --seed+1, ...")
SEED = typer.Option(0, "--seed", help="The first seed.")
CHECKPOINT = typer.Option(None, "--checkpoint", help="An erased checkpoint (its .safetensors file or erase's run folder), applied to its base (or --model).")  # fmt: skip
OUT = typer.Option(None, "--out", help="Output folder; default: runs/generate-<time>.")


@user_errors
@with_drawing
def generate(
    prompts: str = PROMPTS,
    prompts_file: str = PROMPTS_FILE,
    n: int = N,
    seed: int = SEED,
    steps: int | None = STEPS,
    guidance: float | None = GUIDANCE,
    model: str = MODEL,
    checkpoint: Path = CHECKPOINT,
    out: Path = OUT,
    force: bool = FORCE,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = QUIET,
    as_json: bool = AS_JSON,
    drawing=None,
) -> None:
    """Generate images, each PNG carrying its prompt, seed, model and sampler settings, plus a labelled grid.

    Images are written as they are drawn, so memory does not grow with --n and an interrupted run
    (Ctrl-C) keeps every image it finished; images.csv lists them all.
    """
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.distributed import is_main_process, world
    from erasectl.files import check_output_dir, prepare_output_dir
    from erasectl.generation import write_generation
    from erasectl.models import load_base

    prompt_list = read_prompts(prompts, prompts_file)
    if n <= 0:
        raise UserError(f"--n must be at least 1, got {n}")
    erased = [ErasedCheckpoint.load(checkpoint)] if checkpoint is not None else []
    out = check_output_dir(out or Path("runs") / time.strftime("generate-%Y%m%d-%H%M%S"), force)
    loaded = load_base(erased, model, model_config, drawing, device, allow_pickle, apply=bool(erased))
    settings = drawing.sampler(loaded.profile, steps, guidance, loaded.pipeline)
    warn_if_cut(loaded.pipeline, prompt_list)
    prepare_output_dir(out, force or world()[1] > 1)  # checked above; under a launch the processes share it
    with (
        stop_signals() as stop_requested,
        progress_bar("generating", len(prompt_list) * n, enabled=not (quiet or as_json)) as update,
    ):
        summary = write_generation(loaded, prompt_list, seed, n, settings, out, update, stop_requested)
    if not is_main_process():
        return
    if not summary["complete"]:
        typer.echo(
            f"interrupted after {summary['image_count']} of {len(prompt_list) * n} images; they are in {out}", err=True
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"wrote {summary['image_count']} images and {summary['grid']}")
