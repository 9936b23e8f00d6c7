from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import BATCH_SIZE, DTYPE, HEIGHT, NEGATIVE_PROMPT, REVISION, SCHEDULER, VARIANT, WIDTH, ALLOW_PICKLE, DEVICE, MODEL_CONFIG, progress_bar, read_prompts, user_errors
from erasectl.errors import UserError


@user_errors
def generate(
    prompts: str = typer.Option(None, "--prompts", help="Comma-separated prompts, e.g. \"a red circle,a blue ring\"."),
    prompts_file: str = typer.Option(None, "--prompts-file", help="A text file with one prompt per line (for prompts with commas)."),
    n: int = typer.Option(4, "--n", help="Images per prompt; seeds are --seed, --seed+1, ..."),
    seed: int = typer.Option(0, "--seed", help="The first seed."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps (DDIM for the embedded model)."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    model: str = typer.Option(None, "--model", help="Hub id or local diffusers folder; default: the embedded shapes model."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="An erased checkpoint (its .safetensors file or erase's run folder), applied to its base (or --model)."),
    out: Path = typer.Option(None, "--out", help="Output folder; default: runs/generate-<time>."),
    force: bool = typer.Option(False, "--force", help="Write into an output folder that already has files."),
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
    """Generate images, each PNG carrying its prompt, seed, model and sampler settings, plus a labelled grid."""
    from erasectl.distributed import is_main_process
    from erasectl.files import check_output_dir, prepare_output_dir, write_atomically
    from erasectl.generation import SamplerSettings, save_images
    from erasectl.generation import generate as run_generation
    from erasectl.grids import labelled_grid
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.models import inference_setup, load_erased_pipeline, load_pipeline, model_profile
    from erasectl.provenance import versions

    prompt_list = read_prompts(prompts, prompts_file)
    if n <= 0:
        raise UserError(f"--n must be at least 1, got {n}")
    loaded = ErasedCheckpoint.load(checkpoint) if checkpoint is not None else None  # read once: its base names the profile
    profile = model_profile(model or (loaded.base_model if loaded is not None else None), model_config)
    settings = SamplerSettings(steps=steps, guidance=guidance, batch_size=batch_size or profile.generation_batch_size, negative_prompt=negative_prompt, height=height, width=width)
    out = check_output_dir(out or Path("runs") / time.strftime("generate-%Y%m%d-%H%M%S"), force)
    if checkpoint is not None:
        pipeline = load_erased_pipeline(checkpoint, model, device=device, allow_pickle=allow_pickle, config=model_config, revision=revision, variant=variant, loaded=loaded)
    else:
        pipeline = load_pipeline(model, device=device, allow_pickle=allow_pickle, config=model_config, revision=revision, variant=variant)
    inference_setup(pipeline, dtype, scheduler, device)
    if is_main_process():
        prepare_output_dir(out, force)
    seeds = list(range(seed, seed + n))
    started = time.time()
    with progress_bar("generating", len(prompt_list) * n, enabled=not (quiet or as_json)) as update:
        items = run_generation(pipeline, prompt_list, seeds, settings, progress=lambda done, total: update(done))
    if not is_main_process():
        return
    paths = save_images(items, out, pipeline.erasectl_model_name)
    rows = [[item.image for item in items[i * n : (i + 1) * n]] for i in range(len(prompt_list))]
    grid = labelled_grid(rows, prompt_list, [f"seed {s}" for s in seeds])
    grid_path = write_atomically(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
    summary = {
        "model": pipeline.erasectl_model_name,
        "prompts": prompt_list,
        "seeds": seeds,
        "steps": steps,
        "guidance": guidance,
        "scheduler": type(pipeline.scheduler).__name__,
        "negative_prompt": negative_prompt,
        "dtype": dtype or "fp32",
        "batch_size": settings.batch_size,
        "images": [str(p) for p in paths],
        "grid": str(grid_path),
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
    }
    write_atomically(out / "generation.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"wrote {len(paths)} images and {grid_path}")
