"""The shipped model and judge: loadable by diffusers alone, and right about the world."""

import subprocess
import sys

import numpy as np
from PIL import Image

from erasectl.assets import embedded_judge_dir, embedded_pipeline_dir
from erasectl.world.judging import read_attributes
from erasectl.world.render import render_dataset
from erasectl.world.vocabulary import COLOURS, SHAPES


def _printed_without_erasectl(script: str) -> list[str]:
    """What ``script`` prints, run by a fresh interpreter outside the repository (no erasectl import)."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_plain_diffusers_loads_the_shipped_pipeline_without_erasectl():
    script = (
        "import sys, torch\n"
        "from diffusers import StableDiffusionPipeline\n"
        f"pipe = StableDiffusionPipeline.from_pretrained({str(embedded_pipeline_dir())!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "image = pipe('a red circle', num_inference_steps=5, generator=torch.Generator().manual_seed(0)).images[0]\n"
        "assert image.size == (32, 32), image.size\n"
        "assert 'erasectl' not in sys.modules\n"
        "print(type(pipe.unet).__name__, type(pipe.vae).__name__, type(pipe.text_encoder).__name__, type(pipe.tokenizer).__name__)\n"
    )
    assert _printed_without_erasectl(script) == [
        "UNet2DConditionModel",
        "AutoencoderKL",
        "CLIPTextModel",
        "CLIPTokenizer",
    ]


def test_plain_diffusers_loads_the_shipped_mmdit_without_erasectl():
    script = (
        "import sys, torch\n"
        "from diffusers import StableDiffusion3Pipeline\n"
        f"pipe = StableDiffusion3Pipeline.from_pretrained({str(embedded_pipeline_dir('shapes-mmdit'))!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "image = pipe('a red circle', num_inference_steps=5, max_sequence_length=16,\n"
        "             generator=torch.Generator().manual_seed(0)).images[0]\n"
        "assert image.size == (32, 32), image.size\n"
        "assert 'erasectl' not in sys.modules\n"
        "print(type(pipe.transformer).__name__, type(pipe.text_encoder_3).__name__)\n"
    )
    assert _printed_without_erasectl(script) == ["SD3Transformer2DModel", "T5EncoderModel"]


def _megabytes(*folders) -> float:
    return sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file()) / 2**20


def test_shipped_weights_are_small_and_safetensors():
    unet, mmdit, judge = embedded_pipeline_dir(), embedded_pipeline_dir("shapes-mmdit"), embedded_judge_dir()
    assert _megabytes(unet, judge) <= 12, f"{_megabytes(unet, judge):.2f} MB"
    assert _megabytes(unet, mmdit, judge) <= 25, f"{_megabytes(unet, mmdit, judge):.2f} MB"
    files = [p for folder in (unet, mmdit, judge) for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".bin", ".safetensors", ".ckpt", ".pt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)


def test_judge_reads_held_out_renders(world_judge):
    images, labels = render_dataset(300, seed=12345)  # training used seed 0
    read = read_attributes(world_judge, [Image.fromarray(a) for a in images])
    for attribute, threshold in (("shape", 0.95), ("colour", 0.98), ("style", 0.93)):
        accuracy = np.mean([r[attribute] == getattr(label, attribute) for r, label in zip(read, labels)])
        assert accuracy >= threshold, f"judge {attribute} accuracy {accuracy:.3f} < {threshold}"


def test_seeded_generation_is_judged_right(embedded_pipeline, world_judge):
    from erasectl.generation import SamplerSettings, generate

    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    items = generate(embedded_pipeline, prompts, seeds=[0, 1], settings=SamplerSettings(steps=25))
    read = read_attributes(world_judge, [item.image for item in items])
    shape_ok = np.mean([r["shape"] == item.prompt.split()[2] for r, item in zip(read, items)])
    colour_ok = np.mean([r["colour"] == item.prompt.split()[1] for r, item in zip(read, items)])
    assert shape_ok >= 0.8, f"shape right in {shape_ok:.3f} of {len(items)} images"
    assert colour_ok >= 0.95, f"colour right in {colour_ok:.3f} of {len(items)} images"


def test_an_image_depends_on_its_seed_not_its_batch(embedded_pipeline):
    from erasectl.generation import SamplerSettings, generate

    alone = generate(embedded_pipeline, ["a blue ring"], seeds=[3], settings=SamplerSettings(steps=10))
    batched = generate(
        embedded_pipeline, ["a red cross", "a blue ring"], seeds=[2, 3], settings=SamplerSettings(steps=10)
    )
    a = np.asarray(alone[0].image, dtype=int)
    b = np.asarray(batched[3].image, dtype=int)
    assert batched[3].prompt == "a blue ring" and batched[3].seed == 3
    assert np.abs(a - b).max() <= 2  # batched matmuls may round differently, by a pixel level at most
