from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import typer

from erasectl.cli.common import (
    ALLOW_PICKLE,
    BATCH_SIZE,
    DEVICE,
    DTYPE,
    EXIT_INTERRUPTED,
    HEIGHT,
    MODEL_CONFIG,
    NEGATIVE_PROMPT,
    REVISION,
    SCHEDULER,
    VARIANT,
    WIDTH,
    progress_bar,
    read_prompts,
    stop_signals,
    user_errors,
    warn_if_cut,
)
from erasectl.errors import UserError

IMAGE_LIST = "images.csv"  # every image: index, prompt, seed, file
LISTED_FILES = 1000  # generation.json lists the first files; images.csv lists them all
GRID_PROMPTS, GRID_SEEDS = 16, 8


@user_errors
def generate(
    prompts: str = typer.Option(None, "--prompts", help='Comma-separated prompts, e.g. "a red circle,a blue ring".'),
    prompts_file: str = typer.Option(
        None, "--prompts-file", help="A text file with one prompt per line (for prompts with commas)."
    ),
    n: int = typer.Option(4, "--n", help="Images per prompt; seeds are --seed, --seed+1, ..."),
    seed: int = typer.Option(0, "--seed", help="The first seed."),
    steps: int = typer.Option(25, "--steps", help="Sampler steps (DDIM for the embedded model)."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    model: str = typer.Option(
        None, "--model", help="Hub id or local diffusers folder; default: the embedded shapes model."
    ),
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        help="An erased checkpoint (its .safetensors file or erase's run folder), applied to its base (or --model).",
    ),
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
    """Generate images, each PNG carrying its prompt, seed, model and sampler settings, plus a labelled grid.

    Images are written as they are drawn, so memory does not grow with --n and an interrupted run
    (Ctrl-C) keeps every image it finished; images.csv lists them all.
    """
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.distributed import is_main_process, world
    from erasectl.files import check_output_dir, prepare_output_dir, write_atomically
    from erasectl.generation import SamplerSettings
    from erasectl.models import inference_setup, load_erased_model, load_model, model_profile
    from erasectl.provenance import versions

    prompt_list = read_prompts(prompts, prompts_file)
    if n <= 0:
        raise UserError(f"--n must be at least 1, got {n}")
    erased = (
        ErasedCheckpoint.load(checkpoint) if checkpoint is not None else None
    )  # read once: its base names the profile
    profile = model_profile(model or (erased.base_model if erased is not None else None), model_config)
    settings = SamplerSettings(
        steps=steps,
        guidance=guidance,
        batch_size=batch_size or profile.generation_batch_size,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
    )
    out = check_output_dir(out or Path("runs") / time.strftime("generate-%Y%m%d-%H%M%S"), force)
    options = dict(device=device, allow_pickle=allow_pickle, config=model_config, revision=revision, variant=variant)
    loaded = (
        load_erased_model(checkpoint, model, loaded=erased, **options)
        if erased is not None
        else load_model(model, **options)
    )
    inference_setup(loaded.pipeline, dtype, scheduler, device)
    warn_if_cut(loaded.pipeline, prompt_list)
    prepare_output_dir(out, force or world()[1] > 1)  # checked above; under a launch the processes share it
    started = time.time()
    with (
        stop_signals() as stop_requested,
        progress_bar("generating", len(prompt_list) * n, enabled=not (quiet or as_json)) as update,
    ):
        count = write_images(loaded, prompt_list, range(seed, seed + n), settings, out, update, stop_requested)
    if not is_main_process():
        return
    files = merge_image_lists(out)
    grid_path = write_grid(out, prompt_list, n, seed)
    summary = {
        "model": loaded.name,
        "prompts": prompt_list,
        "seed": seed,
        "n": n,
        "steps": steps,
        "guidance": guidance,
        "scheduler": type(loaded.pipeline.scheduler).__name__,
        "negative_prompt": negative_prompt,
        "dtype": dtype or "fp32",
        "batch_size": settings.batch_size,
        "image_count": count,
        "complete": count == len(prompt_list) * n,
        "images": files,
        "images_csv": str(out / IMAGE_LIST),
        "grid": str(grid_path),
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
    }
    write_atomically(out / "generation.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    if not summary["complete"]:
        typer.echo(f"interrupted after {count} of {len(prompt_list) * n} images; they are in {out}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if as_json:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(f"wrote {count} images and {grid_path}")


def write_images(loaded, prompts: list[str], seeds: range, settings, out: Path, update, stop_requested) -> int:
    """Draw and write this process's images batch by batch, each PNG as soon as it is drawn, and
    list them in this process's part of images.csv; stop after the batch in which a stop is asked.
    Returns the number of images written by every process."""
    from erasectl.distributed import world
    from erasectl.generation import generate_batches, save_images

    rank, processes = world()
    written = 0
    with (out / f".{IMAGE_LIST}.{rank}").open("w", newline="") as handle:
        rows = csv.writer(handle)
        for start, items in generate_batches(loaded.pipeline, prompts, seeds, settings):
            paths = save_images(items, out, loaded.name, first_index=start)
            rows.writerows(
                [index, item.prompt, item.seed, path.name]
                for index, (item, path) in enumerate(zip(items, paths), start=start)
            )
            handle.flush()
            written += len(items)
            update(written * processes)
            if stop_requested():
                break
    return _total(written)


def _total(written: int) -> int:
    from erasectl.distributed import sum_over_processes, world

    if world()[1] == 1:
        return written
    import torch
    from accelerate import PartialState

    count = torch.tensor([float(written)])
    sum_over_processes([count])
    PartialState().wait_for_everyone()  # every part of images.csv is complete
    return int(count.item())


def merge_image_lists(out: Path, listed: int = LISTED_FILES) -> list[str]:
    """Join the processes' parts of images.csv in image order; the first ``listed`` files' paths."""
    import heapq

    parts = sorted(out.glob(f".{IMAGE_LIST}.*"))
    handles = [part.open(newline="") for part in parts]
    first = []
    try:
        merged = heapq.merge(*(csv.reader(h) for h in handles), key=lambda row: int(row[0]))
        with (out / IMAGE_LIST).open("w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["index", "prompt", "seed", "file"])
            for row in merged:
                rows.writerow(row)
                if len(first) < listed:
                    first.append(str(out / row[3]))
    finally:
        for handle in handles:
            handle.close()
    for part in parts:
        part.unlink()
    return first


def write_grid(out: Path, prompts: list[str], n: int, seed: int) -> Path:
    """A labelled grid of the first prompts and seeds (at most GRID_PROMPTS x GRID_SEEDS), read
    back from the written files, so that it costs the same whatever --n is."""
    from PIL import Image

    from erasectl.files import write_atomically
    from erasectl.grids import labelled_grid

    rows_shown, seeds_shown = prompts[:GRID_PROMPTS], min(n, GRID_SEEDS)
    files = {}
    with (out / IMAGE_LIST).open(newline="") as handle:
        for row in csv.DictReader(handle):
            index = int(row["index"])
            if index // n < len(rows_shown) and index % n < seeds_shown:
                files[index] = out / row["file"]
            elif index // n >= len(rows_shown):
                break
    grid_rows = [
        [Image.open(files[p * n + s]) for s in range(seeds_shown) if p * n + s in files] for p in range(len(rows_shown))
    ]
    grid_rows = [row for row in grid_rows if row]
    grid = labelled_grid(grid_rows, rows_shown[: len(grid_rows)], [f"seed {seed + s}" for s in range(seeds_shown)])
    return write_atomically(out / "grid.png", lambda tmp: grid.save(tmp, format="PNG"))
