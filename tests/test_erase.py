"""An erasure's checkpoint, applied to its base, is the erased model (what the defaults reach on
the embedded model is measured by benchmarks/erase_world.py, against its goals)."""

import numpy as np
import pytest

from erasectl.assets import EMBEDDED_NAME
from erasectl.generation import SamplerSettings, generate
from erasectl.models import load_erased_model


@pytest.mark.parametrize("which", ["esd_circle", "ablate_circle"])
def test_checkpoint_applied_to_its_base_reproduces_the_erased_images(which, request, tmp_path):
    pipeline, _, path = request.getfixturevalue(which)
    loaded = load_erased_model(path)
    reloaded = loaded.pipeline
    settings = SamplerSettings(steps=10)
    direct = generate(pipeline, ["a red circle", "a ring"], [0, 1], settings)
    applied = generate(reloaded, ["a red circle", "a ring"], [0, 1], settings)
    for a, b in zip(direct, applied):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert loaded.name == path.parent.name and not hasattr(reloaded, "erasectl_checkpoint")
    recipe = loaded.checkpoint.recipe
    assert recipe["concepts"] == ["circle"] and recipe["base_model"] == EMBEDDED_NAME
    assert recipe["config"]["steps"] > 0 and recipe["wall_time_s"] > 0
