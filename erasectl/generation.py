"""Seeded, batched image generation with any diffusers Stable Diffusion pipeline."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from erasectl.architecture import call_options, denoiser
from erasectl.checkpoint import assign_tensors, checkpoint_name, component_tensors
from erasectl.distributed import batch_part, gather_in_order, gather_parts, is_main_process, sum_over_processes, world
from erasectl.errors import ConfigError
from erasectl.files import safe_name, write_atomically
from erasectl.grids import labelled_grid
from erasectl.provenance import versions


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 25
    guidance: float = 7.5
    batch_size: int = 8
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % 8):
                raise ConfigError(f"{name} must be a positive multiple of 8, got {value}")
        if self.steps <= 0:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if self.guidance < 0:
            raise ConfigError(f"guidance must be 0 or more, got {self.guidance}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class Drawing:
    """How images are drawn beyond prompt, seed, steps and guidance, and which weights load: what
    generate, compare and evaluate share. None: the model's own (its scheduler, size, fp32)."""

    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    revision: str | None = None
    variant: str | None = None

    def sampler(self, profile, steps: int | None, guidance: float | None, pipeline) -> SamplerSettings:
        """The sampler settings on ``pipeline``, a model of ``profile`` (its batch size unless one is
        given); steps or guidance not given: the family's defaults (``architecture.sampling_defaults``)."""
        from erasectl.architecture import sampling_defaults

        steps, guidance = sampling_defaults(pipeline, steps, guidance)
        batch_size = self.batch_size or profile.generation_batch_size
        return SamplerSettings(steps, guidance, batch_size, self.negative_prompt, self.height, self.width)


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: object  # PIL.Image.Image
    settings: dict = field(default_factory=dict)


def generate(
    pipeline,
    prompts: list[str],
    seeds: Sequence[int],
    settings: SamplerSettings = SamplerSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> list[GeneratedImage]:
    """Every prompt with every seed, in that order. Each image has its own generator, so an image
    depends on its prompt and seed only, never on the batch it was drawn in. Under ``accelerate
    launch`` the batches are shared among the processes and every process gets all images back.
    For more images than fit in memory, use ``generate_batches``.
    """

    done: dict[int, list[GeneratedImage]] = {}
    drawn, total = 0, len(prompts) * len(seeds)
    for start, items in generate_batches(pipeline, prompts, seeds, settings):
        done[start // settings.batch_size] = items
        drawn += len(items)
        if progress is not None:
            progress(drawn, total)
    return [item for batch in gather_in_order(done, -(-total // settings.batch_size)) for item in batch]


def generate_batches(
    pipeline, prompts: list[str], seeds: Sequence[int], settings: SamplerSettings
) -> Iterator[tuple[int, list[GeneratedImage]]]:
    """This process's batches, one at a time: ``(index of the batch's first image, its images)``,
    image k being ``prompts[k // len(seeds)]`` with ``seeds[k % len(seeds)]``. Nothing is kept
    between batches, so memory does not grow with the number of images."""
    import torch

    scheduler_name = type(pipeline.scheduler).__name__
    meta = {
        "steps": settings.steps,
        "guidance": settings.guidance,
        "scheduler": scheduler_name,
        "negative_prompt": settings.negative_prompt or "",
    }
    total, size = len(prompts) * len(seeds), settings.batch_size
    rank, processes = world()
    for index in range(rank, -(-total // size), processes):
        start = index * size
        batch = [(prompts[k // len(seeds)], seeds[k % len(seeds)]) for k in range(start, min(start + size, total))]
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in batch]
        with torch.inference_mode():
            images = pipeline(
                prompt=[prompt for prompt, _ in batch],
                generator=generators,
                negative_prompt=[settings.negative_prompt] * len(batch) if settings.negative_prompt else None,
                height=settings.height,
                width=settings.width,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance,
                **call_options(pipeline),
            ).images
        yield start, [GeneratedImage(prompt, seed, image, dict(meta)) for (prompt, seed), image in zip(batch, images)]


def draw_latents(
    pipeline, prompts: list[str], count: int, seed: int, steps: int, guidance: float, batch_size: int, size: int = 0
):
    """Clean latents (B, C, H, W) of ``count`` images for ``prompts`` (cycled), ``size`` pixels
    square (0: the model's own), and the prompt index of each. Image i has its own generator seeded
    from ``seed`` and i; under ``accelerate launch`` each process draws its part and all get every latent."""
    import torch

    from erasectl.architecture import latent_shape, latents_of

    pixels = size or latent_shape(pipeline)[-1] * getattr(pipeline, "vae_scale_factor", 8)
    shape = {"height": size, "width": size} if size else {}

    which = [i % len(prompts) for i in range(count)]
    generators = [torch.Generator("cpu").manual_seed(seed * 100_003 + i) for i in range(count)]
    mine = range(count)[batch_part(count)]
    latents = []
    with torch.no_grad():
        for start in range(mine.start, mine.stop, batch_size):
            chunk = range(start, min(start + batch_size, mine.stop))
            drawn = pipeline(
                prompt=[prompts[which[i]] for i in chunk],
                generator=[generators[i] for i in chunk],
                num_inference_steps=steps,
                guidance_scale=guidance,
                output_type="latent",
                **shape,
                **call_options(pipeline),
            ).images
            latents.append(latents_of(pipeline, drawn, pixels))
    return gather_parts(torch.cat(latents)), which


def png_metadata(item: GeneratedImage, model_name: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    fields = {
        "prompt": item.prompt,
        "seed": str(item.seed),
        "model": model_name,
        "steps": str(item.settings["steps"]),
        "guidance": str(item.settings["guidance"]),
        "scheduler": item.settings["scheduler"],
        "negative_prompt": item.settings.get("negative_prompt", ""),
        **{f"version.{k}": v for k, v in versions().items()},
    }
    for key, value in fields.items():
        info.add_text(key, value)
    # The line AUTOMATIC1111 and ComfyUI show as the image's generation parameters.
    width, height = item.image.size
    info.add_text(
        "parameters",
        f"{item.prompt}\n"
        + (f"Negative prompt: {item.settings['negative_prompt']}\n" if item.settings.get("negative_prompt") else "")
        + f"Steps: {item.settings['steps']}, Sampler: {item.settings['scheduler']}, "
        f"CFG scale: {item.settings['guidance']}, Seed: {item.seed}, Size: {width}x{height}, Model: {model_name}",
    )
    return info


def save_images(items: list[GeneratedImage], folder: Path, model_name: str, first_index: int = 0) -> list[Path]:
    """Each image as a PNG carrying its settings, named by its index (from ``first_index``)."""
    paths = []
    for index, item in enumerate(items, start=first_index):
        path = folder / f"{index:04d}_{safe_name(item.prompt)}_seed{item.seed}.png"
        info = png_metadata(item, model_name)
        write_atomically(path, lambda tmp, item=item, info=info: item.image.save(tmp, format="PNG", pnginfo=info))
        paths.append(path)
    return paths


DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
IMAGE_LIST = "images.csv"  # every image: index, prompt, seed, file
LISTED_FILES = 1000  # generation.json lists the first files; images.csv lists them all
GRID_PROMPTS, GRID_SEEDS = 16, 8


def write_generation(
    loaded,
    prompts: list[str],
    seed: int,
    n: int,
    settings: SamplerSettings,
    out: Path,
    progress=None,
    stop_requested=None,
) -> dict:
    """Draw ``n`` seeds of every prompt with ``loaded`` (an ``erasectl.models.LoadedModel``) into
    ``out``, each PNG written as it is drawn, then images.csv, a grid and generation.json, whose
    summary is returned (``complete`` is False when ``stop_requested()`` ended it early). Memory
    does not grow with ``n``. Under a launch, only the main process's summary is complete."""
    import json
    import time

    started = time.time()
    count = write_images(
        loaded,
        prompts,
        range(seed, seed + n),
        settings,
        out,
        progress or (lambda done: None),
        stop_requested or (lambda: False),
    )
    if not is_main_process():
        return {"image_count": count, "complete": count == len(prompts) * n}
    files = merge_image_lists(out)
    summary = {
        "model": loaded.name, "prompts": prompts, "seed": seed, "n": n, "steps": settings.steps, "guidance": settings.guidance,
        "scheduler": type(loaded.pipeline.scheduler).__name__, "negative_prompt": settings.negative_prompt,
        "dtype": DTYPE_NAMES[str(denoiser(loaded.pipeline).dtype)], "batch_size": settings.batch_size,
        "image_count": count, "complete": count == len(prompts) * n, "images": files, "images_csv": str(out / IMAGE_LIST),
        "grid": str(write_grid(out, prompts, n, seed)), "wall_time_s": round(time.time() - started, 2), "versions": versions(),
    }  # fmt: skip
    write_atomically(out / "generation.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def write_images(
    loaded, prompts: list[str], seeds: range, settings: SamplerSettings, out: Path, update, stop_requested
) -> int:
    """Draw and write this process's images batch by batch, each PNG as soon as it is drawn, and
    list them in this process's part of images.csv; stop after the batch in which a stop is asked.
    Returns the number of images written by every process."""

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


def draw_comparison(
    loaded, checkpoints: list, prompts: list[str], seeds: list[int], settings: SamplerSettings, out: Path, progress=None
) -> dict:
    """The base (``loaded``) and each erased checkpoint drawn from the same seeds into one labelled
    grid at ``out`` (prompts as rows, each model's seeds as columns) and ``out`` .json beside it;
    each checkpoint is applied in turn and the base's tensors put back after it."""
    import json

    pipeline, columns, done = loaded.pipeline, [], 0
    for erased in [None, *checkpoints]:
        original = None
        if erased is not None:
            original = {k: v.clone() for k, v in component_tensors(pipeline, erased.target_keys()).items()}
            erased.apply(pipeline)
        items = generate(
            pipeline, prompts, seeds, settings, progress=lambda k, _, done=done: progress and progress(done + k)
        )
        done += len(items)
        columns.append(("base" if erased is None else checkpoint_name(erased.path), items))
        if original is not None:
            assign_tensors(pipeline, original)
    summary = {
        "grid": str(out), "prompts": prompts, "seeds": seeds, "base_model": loaded.name, "models": [name for name, _ in columns],
        "checkpoints": [str(c.path) for c in checkpoints], "steps": settings.steps, "guidance": settings.guidance,
        "negative_prompt": settings.negative_prompt, "scheduler": type(pipeline.scheduler).__name__,
        "dtype": DTYPE_NAMES[str(denoiser(pipeline).dtype)], "versions": versions(),
    }  # fmt: skip
    if is_main_process():
        n = len(seeds)
        rows = [
            [item.image for _, items in columns for item in items[i * n : (i + 1) * n]] for i in range(len(prompts))
        ]
        grid = labelled_grid(rows, prompts, [name for name, _ in columns])
        write_atomically(out, lambda tmp: grid.save(tmp, format="PNG"))
        write_atomically(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary
