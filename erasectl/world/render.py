"""A pure, seeded renderer of the shapes world.

One shape of one colour per image, with random size, position, rotation and colour jitter, on a
dark, low-saturation background. Shapes are drawn on a 4x supersampled grid and box-filtered, so
edges are anti-aliased the way a photograph's would be. Labels are the renderer's own inputs, so
they are true by construction.
"""

from __future__ import annotations

import numpy as np

from erasectl.world.vocabulary import COLOURS, SHAPES, STYLES, Label

IMAGE_SIZE = 32
SUPERSAMPLE = 4
BASE_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "green": (50, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (225, 210, 50),
}
STRIPE_PERIOD = 4.0  # pixels at 32x32: two lit, two dark
_HI_RES = IMAGE_SIZE * SUPERSAMPLE
# Centres of the supersampled pixels, in output-pixel units.
_GRID = (np.arange(_HI_RES, dtype=np.float32) + 0.5) / SUPERSAMPLE
_Y, _X = np.meshgrid(_GRID, _GRID, indexing="ij")


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Inside test in the shape's own frame (``u`` right, ``v`` down, origin at its centre)."""
    if shape == "circle":
        return u * u + v * v <= radius * radius
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= radius * radius) & (r2 >= (0.55 * radius) ** 2)
    if shape == "square":
        half = 0.82 * radius
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":
        # Equilateral, apex up; inside = within the inradius along each edge's outward normal.
        inside = np.ones_like(u, dtype=bool)
        for angle in (np.pi / 2, 7 * np.pi / 6, 11 * np.pi / 6):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= radius / 2
        return inside
    if shape == "cross":
        arm = 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    raise ValueError(f"unknown shape {shape!r}; the world's shapes are {', '.join(SHAPES)}")


def render_label(label: Label, rng: np.random.Generator) -> np.ndarray:
    """Draw one image of ``label`` as a ``(32, 32, 3)`` uint8 array."""
    radius = rng.uniform(7.0, 12.0)
    cx, cy = rng.uniform(radius + 0.5, IMAGE_SIZE - radius - 0.5, size=2)
    theta = rng.uniform(-np.pi / 12, np.pi / 12)
    grey = rng.uniform(15, 60)
    background = np.clip(grey + rng.uniform(-8, 8, size=3), 0, 255).astype(np.float32)
    fill = np.clip(np.array(BASE_RGB[label.colour]) + rng.uniform(-20, 20, size=3), 0, 255).astype(np.float32)

    dx, dy = _X - cx, _Y - cy
    cos, sin = np.cos(theta), np.sin(theta)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    inside = shape_mask(label.shape, u, v, radius)[..., None]
    colour = np.broadcast_to(fill, inside.shape[:2] + (3,))
    if label.style == "striped":
        # Diagonal stripes fixed to the image grid, not to the shape: a period that divides the
        # VAE's 4x downsampling lets every latent pixel carry the same pattern, so the style
        # survives the autoencoder (stripes with a random phase were averaged away to a flat tint).
        lit = (np.floor((_X + _Y) / (STRIPE_PERIOD / 2)) % 2 == 0)[..., None]
        colour = np.where(lit, fill, 0.3 * fill + 0.7 * background)
    hi_res = np.where(inside, colour, background)
    image = hi_res.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))
    image += rng.normal(0.0, 2.5, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def sample_labels(n: int, rng: np.random.Generator, striped_share: float = 0.35) -> list[Label]:
    shapes = rng.integers(0, len(SHAPES), size=n)
    colours = rng.integers(0, len(COLOURS), size=n)
    striped = rng.random(n) < striped_share
    return [Label(SHAPES[s], COLOURS[c], STYLES[int(t)]) for s, c, t in zip(shapes, colours, striped)]


def render_dataset(n: int, seed: int, striped_share: float = 0.35) -> tuple[np.ndarray, list[Label]]:
    """``n`` random images and their labels; the same ``seed`` gives the same bytes."""
    rng = np.random.default_rng(seed)
    labels = sample_labels(n, rng, striped_share)
    images = np.stack([render_label(label, rng) for label in labels]) if n else np.zeros((0, 32, 32, 3), np.uint8)
    return images, labels
