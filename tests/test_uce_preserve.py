"""Closed-form UCE on the embedded model (the spare-the-neighbours goals are still open)."""

import time

from erasectl.erasure import ErasureRequest, erase_concepts
from erasectl.methods import get_method
from erasectl.models import EMBEDDED_NAME, load_pipeline
from erasectl.world.judging import shape_report

SEEDS = list(range(200, 204))


def test_uce_erases_circle_in_seconds(world_judge):
    pipeline = load_pipeline()
    started = time.perf_counter()
    checkpoint = erase_concepts(pipeline, "uce", ErasureRequest(["circle"], EMBEDDED_NAME), get_method("uce").Config())
    seconds = time.perf_counter() - started
    report = shape_report(pipeline, world_judge, SEEDS)
    # Measured 0.00 (seeds 1000-1003) and 0.19 (these seeds), from 1.00 before; the 10% goal
    # with neighbours kept at 90% is still open.
    assert report["circle"]["accuracy"] <= 0.3, report["circle"]
    assert checkpoint.recipe["config"]["token_positions"] == "to-end"
    assert len(checkpoint.tensors) == 14 and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in checkpoint.tensors)
    assert seconds < 30, seconds  # the 5 s goal is measured by benchmarks/erase_world.py


def test_uce_concept_tokens_alone_do_not_erase_this_model(world_judge):
    """Why the default reaches every position after the concept: the UNet reads the padding too."""
    pipeline = load_pipeline()
    config = get_method("uce").Config(token_positions="concept")
    erase_concepts(pipeline, "uce", ErasureRequest(["circle"], EMBEDDED_NAME), config)
    assert shape_report(pipeline, world_judge, SEEDS)["circle"]["accuracy"] >= 0.5
