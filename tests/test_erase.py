"""Erasing "circle" from the embedded model, judged by the world judge (issue: erase and compare)."""

import numpy as np
import pytest

from erasectl.generation import SamplerSettings, generate
from erasectl.models import EMBEDDED_NAME, load_erased_pipeline, load_pipeline
from erasectl.world.judging import shape_report
from erasectl.world.vocabulary import SHAPES

SEEDS = list(range(100, 108))  # 8 seeds x 4 colours = 32 images per shape


@pytest.fixture(scope="module")
def base_report(world_judge):
    return shape_report(load_pipeline(), world_judge, SEEDS)


@pytest.mark.parametrize("which", ["esd_circle", "ablate_circle"])
def test_circle_is_erased_and_neighbours_survive(which, request, base_report, world_judge):
    pipeline, _, _ = request.getfixturevalue(which)
    erased = shape_report(pipeline, world_judge, SEEDS)
    assert base_report["circle"]["accuracy"] >= 0.9, base_report["circle"]
    assert erased["circle"]["accuracy"] <= 0.1, f"circle still drawn in {erased['circle']['accuracy']:.3f}"
    for shape in SHAPES:
        if shape != "circle":
            kept = erased[shape]["accuracy"] / base_report[shape]["accuracy"]
            assert kept >= 0.8, f"{shape}: {erased[shape]['accuracy']:.3f} vs base {base_report[shape]['accuracy']:.3f}"
    colour = np.mean([erased[s]["colour_accuracy"] for s in SHAPES])
    assert colour >= 0.95, f"colours right in {colour:.3f}"


@pytest.mark.parametrize("which", ["esd_circle", "ablate_circle"])
def test_checkpoint_applied_to_its_base_reproduces_the_erased_images(which, request, tmp_path):
    pipeline, _, path = request.getfixturevalue(which)
    reloaded = load_erased_pipeline(path)
    settings = SamplerSettings(steps=10)
    direct = generate(pipeline, ["a red circle", "a ring"], [0, 1], settings)
    applied = generate(reloaded, ["a red circle", "a ring"], [0, 1], settings)
    for a, b in zip(direct, applied):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    recipe = reloaded.erasectl_checkpoint.recipe
    assert recipe["concepts"] == ["circle"] and recipe["base_model"] == EMBEDDED_NAME
    assert recipe["config"]["steps"] > 0 and recipe["wall_time_s"] > 0
