"""Seeded, batched image generation with any diffusers Stable Diffusion pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from erasectl.errors import ConfigError
from erasectl.files import safe_name, write_atomically
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
    from erasectl.distributed import gather_in_order

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

    from erasectl.distributed import world

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
            ).images
        yield start, [GeneratedImage(prompt, seed, image, dict(meta)) for (prompt, seed), image in zip(batch, images)]


def draw_latents(pipeline, prompts: list[str], count: int, seed: int, steps: int, guidance: float, batch_size: int):
    """Clean latents of ``count`` images for ``prompts`` (cycled), and the prompt index of each.
    Image i has its own generator seeded from ``seed`` and i; under ``accelerate launch`` each
    process draws its part and all get every latent."""
    import torch

    from erasectl.distributed import batch_part, gather_parts

    which = [i % len(prompts) for i in range(count)]
    generators = [torch.Generator("cpu").manual_seed(seed * 100_003 + i) for i in range(count)]
    mine = range(count)[batch_part(count)]
    latents = []
    with torch.no_grad():
        for start in range(mine.start, mine.stop, batch_size):
            chunk = range(start, min(start + batch_size, mine.stop))
            latents.append(
                pipeline(
                    prompt=[prompts[which[i]] for i in chunk],
                    generator=[generators[i] for i in chunk],
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    output_type="latent",
                ).images
            )
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
