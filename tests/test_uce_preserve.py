"""Closed-form UCE on the embedded model: erases in seconds, keeps what it preserves."""

import time

import pytest

from erasectl.erasure import ErasureRequest, build_config, erase_concepts
from erasectl.models import load_pipeline
from erasectl.world.judging import shape_report
from erasectl.world.profile import WorldProfile
from erasectl.world.vocabulary import SHAPES

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
