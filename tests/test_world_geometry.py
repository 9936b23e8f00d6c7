"""The geometric reader of the shapes world (erasectl.world.geometry), on rendered images whose
labels are true by construction."""

import numpy as np

from erasectl.world.geometry import read_geometry
from erasectl.world.render import _X, _Y, BASE_RGB, IMAGE_SIZE, SUPERSAMPLE, render_dataset, shape_mask
from erasectl.world.vocabulary import SHAPES


def test_reads_renders_it_was_not_set_on():
    images, labels = render_dataset(400, seed=99)  # the thresholds were set on render seed 7
    readings = [read_geometry(image) for image in images]
    for shape in SHAPES:
        mine = [r for r, label in zip(readings, labels) if label.shape == shape]
        assert sum(r["shape"] == shape for r in mine) / len(mine) >= 0.97, shape
    assert sum(r["colour"] == label.colour for r, label in zip(readings, labels)) / len(labels) >= 0.99


def _paint(mask: np.ndarray, colour: str) -> np.ndarray:
    hi_res = np.where(mask[..., None], np.array(BASE_RGB[colour], np.float32), np.float32(35.0))
    return hi_res.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3)).astype(np.uint8)


def test_a_cross_with_rounded_arms_is_a_cross_and_an_empty_image_no_shape():
    u, v = _X - 16.0, _Y - 16.0
    swollen = np.zeros_like(u, dtype=bool)
    for dx, dy in ((0, 0), (6, 0), (-6, 0), (0, 6), (0, -6)):  # a disc at the centre and one per arm
        swollen |= (u - dx) ** 2 + (v - dy) ** 2 <= 4.5**2
    assert read_geometry(_paint(shape_mask("circle", u, v, 10.0), "red"))["shape"] == "circle"
    assert read_geometry(_paint(swollen, "red")) == {"shape": "cross", "colour": "red"}
    assert read_geometry(_paint(np.zeros_like(swollen), "red")) == {"shape": "unclear", "colour": "none"}


def test_the_world_profile_reads_outlines_of_shapes_and_of_no_style():
    from erasectl.profiles import PaperProfile
    from erasectl.world.profile import WorldProfile

    images, labels = render_dataset(8, seed=3)
    read = WorldProfile().outline_reader()
    assert read(images, "circle") == [label.shape == "circle" for label in labels]
    assert read(images, f"{labels[0].colour} {labels[0].shape}")[0] is True
    assert read(images, "striped") is None and PaperProfile().outline_reader() is None
