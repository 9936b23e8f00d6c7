"""--preserve and several concepts at once for the trained methods: the mechanisms, on short runs.

What the defaults achieve end to end (held-out shapes, colours, the worst damage) is measured by
benchmarks/preservation.py and benchmarks/erase_world.py, not here.
"""

import pytest
import torch

from erasectl.architecture import encode_prompts, predict_noise
from erasectl.diffusion import training_scheduler
from erasectl.erasure import ErasureRequest, build_config, erase_concepts
from erasectl.models import load_pipeline
from erasectl.world.profile import WorldProfile

SHORT = {"esd": {"steps": 25}, "ablate": {"steps": 25, "anchor_images": 8}}
ANCHORS = {"esd": None, "ablate": "shape"}


def _noised(pipeline, n=16):
    generator = torch.Generator().manual_seed(7)
    shape = (n, 4, pipeline.unet.config.sample_size, pipeline.unet.config.sample_size)
    timesteps = torch.linspace(100, 900, n).long()
    return training_scheduler(pipeline).add_noise(
        torch.randn(shape, generator=generator), torch.randn(shape, generator=generator), timesteps
    ), timesteps


@torch.no_grad()
def _predictions(pipeline, prompts):
    latents, timesteps = _noised(pipeline)
    return {
        p: predict_noise(pipeline.unet, latents, timesteps, encode_prompts(pipeline, [p]).expand(len(latents), -1, -1))
        for p in prompts
    }


def _erase(method, concepts, preserve=(), config=None):
    pipeline = load_pipeline()
    request = ErasureRequest(concepts, WorldProfile(), ANCHORS[method], preserve=list(preserve))
    erase_concepts(
        pipeline, method, request, build_config(method, WorldProfile(), config or SHORT[method], len(concepts))
    )
    return pipeline


@pytest.fixture(scope="module")
def base_predictions():
    return _predictions(
        load_pipeline(),
        ["a red circle", "a red square", "a green circle", "a triangle", "a circle", "a square", "a cross", ""],
    )


def _drift(pipeline, base, prompts):
    found = _predictions(pipeline, prompts)
    return {p: float((found[p] - base[p]).pow(2).mean()) for p in prompts}


@pytest.mark.parametrize("method", ["esd", "ablate"])
def test_preserve_holds_the_preserved_predictions(method, base_predictions):
    # a one-word concept: a multi-word one keeps its words by default (the conjunction), so its
    # run "without --preserve" would preserve something too
    kept = ["square", "triangle"]
    prompts = ["a square", "a triangle", ""]
    plain = _drift(_erase(method, ["circle"]), base_predictions, prompts)
    preserved = _drift(_erase(method, ["circle"], kept), base_predictions, prompts)
    for prompt in prompts:  # the preserved prompts and the empty one, which guidance subtracts
        assert preserved[prompt] < 0.7 * plain[prompt], (method, prompt, plain, preserved)


@pytest.mark.parametrize("method", ["esd", "ablate"])
def test_two_concepts_both_move_more_than_a_bystander(method, base_predictions):
    # two concepts share one anchor's images: ablation needs a few more of them than one concept
    pipeline = _erase(
        method, ["circle", "triangle"], config={"steps": 40, "anchor_images": 16} if method == "ablate" else None
    )
    drift = _drift(pipeline, base_predictions, ["a circle", "a triangle", "a square", "a cross"])
    for concept in ("a circle", "a triangle"):
        assert drift[concept] > 1.5 * max(drift["a square"], drift["a cross"]), (method, drift)
