import numpy as np
import pytest

from erasectl.world.render import BASE_RGB, render_dataset, render_label
from erasectl.world.vocabulary import COLOURS, SHAPES, Label, all_labels


def test_same_seed_same_bytes_and_labels():
    images_a, labels_a = render_dataset(64, seed=7)
    images_b, labels_b = render_dataset(64, seed=7)
    images_c, _ = render_dataset(64, seed=8)
    assert labels_a == labels_b
    assert np.array_equal(images_a, images_b)
    assert not np.array_equal(images_a, images_c)


def test_every_label_occurs_in_a_large_sample():
    _, labels = render_dataset(2000, seed=0)
    assert set(labels) == set(all_labels())


def _foreground(image: np.ndarray) -> np.ndarray:
    """Pixels far from the background (the corner colours)."""
    pixels = image.reshape(-1, 3).astype(float)
    corners = image[[0, 0, -1, -1], [0, -1, 0, -1]].astype(float).mean(axis=0)
    return pixels[np.linalg.norm(pixels - corners, axis=1) > 60]


@pytest.mark.parametrize("colour", COLOURS)
def test_foreground_colour_is_the_labelled_colour(colour):
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        image = render_label(Label(shape, colour, "plain"), rng)
        mean = _foreground(image).mean(axis=0)
        nearest = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(BASE_RGB[c])))
        assert nearest == colour, f"{shape}: foreground {mean} is nearest {nearest}"


def test_ring_has_a_hole_and_circle_does_not():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ring_fg = len(_foreground(render_label(Label("ring", "red", "plain"), rng)))
        circle_fg = len(_foreground(render_label(Label("circle", "red", "plain"), rng)))
        assert ring_fg > 0 and circle_fg > 0
    # Same size distribution: a ring covers clearly less area than a disc on average.
    rings = [len(_foreground(render_label(Label("ring", "blue", "plain"), rng))) for _ in range(200)]
    circles = [len(_foreground(render_label(Label("circle", "blue", "plain"), rng))) for _ in range(200)]
    assert np.mean(rings) < 0.8 * np.mean(circles)


def _diagonal_contrast(image: np.ndarray) -> float:
    """Mean change from each pixel to its lower-right neighbour: stripes run across that direction."""
    grey = image.astype(float).mean(axis=2)
    return float(np.abs(grey[1:, 1:] - grey[:-1, :-1]).mean())


@pytest.mark.parametrize("shape", SHAPES)
def test_stripes_add_bands_inside_the_shape(shape):
    rng = np.random.default_rng(3)
    plain = [_diagonal_contrast(render_label(Label(shape, "yellow", "plain"), rng)) for _ in range(50)]
    striped = [_diagonal_contrast(render_label(Label(shape, "yellow", "striped"), rng)) for _ in range(50)]
    assert np.mean(striped) > 1.2 * np.mean(plain), (np.mean(striped), np.mean(plain))
