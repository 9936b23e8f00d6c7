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
    read_prompts,
    user_errors,
    warn_if_cut,
)
from erasectl.errors import UserError

MAX_SEEDS = 64  # columns per model in a grid


@user_errors
def compare(
    prompts: str = typer.Option(None, "--prompts", help='Comma-separated prompts, one row each, e.g. "a ring,a disc".'),
    prompts_file: str = typer.Option(None, "--prompts-file", help="A text file with one prompt per line."),
    checkpoint: list[Path] = typer.Option(
        None,
        "--checkpoint",
        help="An erased checkpoint (its .safetensors file or erase's run folder); repeat for several. Default: the newest in runs/.",
    ),
    model: str = typer.Option(None, "--model", help="The base model; default: the one named in the checkpoint."),
    n: int = typer.Option(4, "--n", help="Seeds per prompt, the same in every model's columns."),
    seed: int = typer.Option(0, "--seed", help="The first seed."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    out: Path = typer.Option(None, "--out", help="The grid PNG; default: runs/compare-<time>.png."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    negative_prompt: str = NEGATIVE_PROMPT,
    height: int = HEIGHT,
    width: int = WIDTH,
    scheduler: str = SCHEDULER,
    dtype: str = DTYPE,
    batch_size: int = BATCH_SIZE,
    revision: str = REVISION,
    variant: str = VARIANT,
    device: str = DEVICE,
    model_config: Path = MODEL_CONFIG,
    allow_pickle: bool = ALLOW_PICKLE,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Base and erased models side by side: prompts as rows, the same seeds in each model's columns."""
    from erasectl.checkpoint import ErasedCheckpoint, assign_tensors, checkpoint_name, component_tensors
    from erasectl.distributed import is_main_process
    from erasectl.files import write_atomically
    from erasectl.generation import SamplerSettings, generate
    from erasectl.grids import labelled_grid
    from erasectl.models import inference_setup, latest_checkpoint, load_pipeline, model_profile
    from erasectl.provenance import versions

    prompt_list = read_prompts(prompts, prompts_file)
    if not 1 <= n <= MAX_SEEDS:
        raise UserError(
            f"--n must be between 1 and {MAX_SEEDS} for a grid one can look at, got {n}; draw many images with erasectl generate"
        )
    out = out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force")
    checkpoints = [ErasedCheckpoint.load(p) for p in checkpoint or [latest_checkpoint()]]
    paths = [c.path for c in checkpoints]
    base_name = model or checkpoints[0].base_model
    base_config = model_config or checkpoints[0].base_config
    profile = model_profile(base_name, base_config)
    settings = SamplerSettings(
        steps=steps,
        guidance=guidance,
        batch_size=batch_size or profile.generation_batch_size,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
    )
    pipeline = load_pipeline(
        base_name, device=device, allow_pickle=allow_pickle, config=base_config, revision=revision, variant=variant
    )
    for erased in checkpoints:
        erased.check(pipeline)
    inference_setup(pipeline, dtype, scheduler, device)
    warn_if_cut(pipeline, prompt_list)
    seeds = list(range(seed, seed + n))
    columns: list[tuple[str, list]] = []
    total = len(prompt_list) * n * (len(checkpoints) + 1)
    with progress_bar("generating", total, enabled=not (quiet or as_json)) as update:
        done = 0

        def run(name: str) -> None:
            nonlocal done
            items = generate(pipeline, prompt_list, seeds, settings, progress=lambda k, _: update(done + k))
            done += len(items)
            columns.append((name, items))

        run("base")
        for path, erased in zip(paths, checkpoints):
            original = {k: v.clone() for k, v in component_tensors(pipeline, list(erased.tensors)).items()}
            erased.apply(pipeline)
            run(checkpoint_name(path))
            assign_tensors(pipeline, original)
    if not is_main_process():
        return
    rows = [
        [img for _, items in columns for img in [it.image for it in items[i * n : (i + 1) * n]]]
        for i in range(len(prompt_list))
    ]
    grid = labelled_grid(rows, prompt_list, [name for name, _ in columns])
    write_atomically(out, lambda tmp: grid.save(tmp, format="PNG"))
    summary = {
        "grid": str(out),
        "prompts": prompt_list,
        "seeds": seeds,
        "base_model": base_name,
        "models": [name for name, _ in columns],
        "checkpoints": [str(p) for p in paths],
        "steps": steps,
        "guidance": guidance,
        "negative_prompt": negative_prompt,
        "scheduler": type(pipeline.scheduler).__name__,
        "dtype": dtype or "fp32",
        "versions": versions(),
    }
    write_atomically(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"wrote {out}")
