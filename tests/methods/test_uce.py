"""UCE: the closed form, its positions and guides, and what it erases on the embedded world (its rows against the authors' script: tests/test_reference.py)."""

import time

import pytest
import torch

from erasectl.erasure import ErasureRequest, build_config, erase_concepts
from erasectl.methods.uce import UCEConfig, aligned_guide_position, closed_form
from erasectl.models import load_pipeline
from erasectl.world.judging import shape_report
from erasectl.world.profile import WorldProfile
from erasectl.world.vocabulary import SHAPES


def test_uce_closed_form_maps_concepts_to_targets_and_keeps_preserved_outputs():
    generator = torch.Generator().manual_seed(3)
    w0 = torch.randn(16, 32, generator=generator, dtype=torch.float64)
    erase = torch.randn(3, 32, generator=generator, dtype=torch.float64)
    targets = torch.randn(3, 16, generator=generator, dtype=torch.float64)
    preserve = torch.randn(5, 32, generator=generator, dtype=torch.float64)
    config = UCEConfig(erase_scale=1e6, preserve_scale=1e6, lamb=1e-3)
    edited = closed_form(w0, erase, targets, preserve, config)
    torch.testing.assert_close(erase @ edited.T, targets, rtol=0, atol=1e-4)
    torch.testing.assert_close(preserve @ edited.T, preserve @ w0.T, rtol=0, atol=1e-4)
    # lam alone: nothing to edit leaves W0
    torch.testing.assert_close(closed_form(w0, erase, erase @ w0.T, None, UCEConfig(lamb=0.5)), w0)


def test_uce_guide_positions_align_from_the_end():
    # concept "grumpy cat" at [3, 5) of "a photo of grumpy cat" (BOS at 0), end token at 5
    start, end, length = 3, 5, 77
    # a longer guide "garfield the cat" [3, 6): last meets last, the one before meets the one before
    assert [aligned_guide_position(p, start, end, 6, length) for p in (3, 4, 5, 6)] == [4, 5, 6, 7]
    # a shorter guide "cat" [3, 4): both concept tokens meet it; the end token meets the end token
    assert [aligned_guide_position(p, start, end, 4, length) for p in (3, 4, 5)] == [3, 3, 4]
    # the empty guide: the token before it (the start token of a bare prompt, as the authors' script)
    assert aligned_guide_position(1, 1, 2, 1, length) == 0
    assert aligned_guide_position(76, start, end, 6, length) == 76


SEEDS = list(range(200, 204))


@pytest.fixture(scope="module")
def uce_base_report(world_judge):
    return shape_report(load_pipeline(), world_judge, SEEDS)


def _uce(concepts, preserve=(), **config):
    pipeline = load_pipeline()
    started = time.perf_counter()
    checkpoint = erase_concepts(
        pipeline,
        "uce",
        ErasureRequest(concepts, WorldProfile(), preserve=list(preserve)),
        build_config("uce", WorldProfile(), config),
    )
    return pipeline, checkpoint, time.perf_counter() - started


def test_uce_erases_circle_and_keeps_the_other_shapes(world_judge, uce_base_report):
    pipeline, checkpoint, seconds = _uce(["circle"])
    report = shape_report(pipeline, world_judge, SEEDS)
    assert report["circle"]["accuracy"] <= 0.1, report["circle"]
    # The other shapes are held out (nothing preserves them); UCE's damage to them is measured by
    # benchmarks/erase_world.py. Here: the closed form stays local, no shape collapses.
    for shape in SHAPES[1:]:
        assert report[shape]["accuracy"] >= 0.5 * uce_base_report[shape]["accuracy"], (shape, report[shape])
    # Defaults on the embedded model: no shape is preserved (the other shapes above are held out),
    # only the attributes on the generic noun; circle is guided to the nearest other shape.
    assert not set(checkpoint.recipe["preserve"]) & set(SHAPES) and "red shape" in checkpoint.recipe["preserve"]
    assert checkpoint.recipe["guides"]["circle"] in SHAPES[1:]
    assert len(checkpoint.tensors) == 14 and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in checkpoint.tensors)
    assert seconds < 30, seconds  # the 5 s goal is measured by benchmarks/erase_world.py


def test_uce_erases_two_concepts_at_once(world_judge, uce_base_report):
    pipeline, checkpoint, _ = _uce(["circle", "triangle"], preserve=["square", "cross", "ring"])
    report = shape_report(pipeline, world_judge, SEEDS)
    assert report["circle"]["accuracy"] <= 0.1 and report["triangle"]["accuracy"] <= 0.1, report
    for shape in ("square", "cross", "ring"):
        assert report[shape]["accuracy"] >= 0.8 * uce_base_report[shape]["accuracy"], (shape, report[shape])
    assert set(checkpoint.recipe["guides"].values()) <= {"square", "cross", "ring"}


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
@pytest.mark.parametrize("variant", ["script", "paper"])
def test_each_variant_moves_the_concepts_attention_output_toward_the_guides(tmp_path, family, variant):
    """On SD 2.x and SDXL shapes (users report UCE failing there: unified-concept-editing #33, #35),
    each variant brings the concept's key and value outputs at its last token most of the way to
    the guide's, in every cross-attention projection."""
    from tiny_models import tiny_pipeline

    from erasectl.architecture import encode_prompts, token_rows
    from erasectl.profiles import PaperProfile

    pipeline = load_pipeline(str(tiny_pipeline(tmp_path / family, family)))
    rows = token_rows(pipeline.unet, encode_prompts(pipeline, ["circle", ""])).double()
    concept, guide = rows[0, 1], rows[1, 0]  # "circle"'s last token; the empty guide's aligned (start) token
    names = [n for n, _ in pipeline.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    before = {n: pipeline.unet.get_submodule(n).weight.detach().double().clone() for n in names}
    config = build_config("uce", PaperProfile(), {"variant": variant})
    checkpoint = erase_concepts(pipeline, "uce", ErasureRequest(["circle"], PaperProfile()), config)
    for name in names:
        w0, w = before[name], checkpoint.tensors[f"unet.{name}.weight"].double()
        gap_before = (w0 @ concept - w0 @ guide).norm()
        gap_after = (w @ concept - w0 @ guide).norm()
        assert gap_after < 0.5 * gap_before, (name, float(gap_after / gap_before))
