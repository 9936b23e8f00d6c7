"""A second reader of shapes-world images: the shape by its outline, not by the CLIP judge.

The CLIP judge must choose one of the five shapes for every image, and an image between two of
them (a cross with swollen, rounded arms, say) goes to whichever is nearer in its embedding space.
This reader measures the drawn outline itself, so that a figure resting on the judge can be checked
against what the image shows.

The shape is the largest connected region of saturated pixels (the world's background is grey, its
shapes coloured; a striped shape's dark stripes are saturated too), traced at 4x the image's
resolution. Its outline is read as a radius per direction about the centroid, r(theta):

- ``roundness``: the radius's coefficient of variation. A disc's or ring's is near 0, a square's
  (corners sqrt(2) out) about 0.11, a cross's or triangle's 0.2 or more;
- ``lobes3`` and ``lobes4``: the third and fourth harmonics of r(theta), relative to its mean: a
  triangle has three corners, a square four, a cross four arms;
- ``axis_angle``: how far (degrees, 0-45) the four lobes lie from the image's axes. The world turns
  its shapes by at most 15 degrees, so a cross's arms lie within 15 of the axes and a square's
  corners within 15 of the diagonals. A cross with rounded arms keeps its lobes on the axes;
- ``hole``: the share of the filled region that is a hole (a ring's).

Thresholds are set on rendered images, whose labels are true by construction (render seed 7:
discs' and rings' roundness at most 0.05, squares' at least 0.10; triangles' third harmonic at
least 0.27, every other shape's at most 0.05; crosses' lobes at most 16 degrees from the axes,
squares' at least 29), never on an erased model's images; ``benchmarks/geometry_reader.py``
checks the reader on other renders and on the base model's draws. Where no rule holds the reading
is ``"unclear"``: the reader does not force a choice the image does not support.
"""

from __future__ import annotations

import numpy as np

from erasectl.world.render import BASE_RGB
from erasectl.world.vocabulary import COLOURS, NOUN_TO_SHAPE

UPSAMPLE = 4
DIRECTIONS = 32
ROUND = 0.07  # roundness below: a disc, or a ring where it has a hole
RING_HOLE = 0.12  # rings' holes are 0.21-0.30 of their filled area, every other shape's 0
TRIANGLE_LOBES = 0.15  # a third harmonic above, and above the fourth: three corners
FOUR_LOBES = 0.08  # a fourth harmonic above: four corners or arms
AXIS_ANGLE = 22.5  # lobes nearer the axes than this: a cross's arms; farther: a square's corners
MIN_AREA = 12  # pixels of the 32x32 image; less is no shape


def measure_shape(image) -> dict | None:
    """The outline measures of ``image`` (a PIL image or an HxWx3 uint8 array) and ``colour``, the
    world colour nearest the mean of the region's brighter half (a striped shape's lit stripes);
    None where there is no shape."""
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    chroma = pixels.max(-1) - pixels.min(-1)
    level = max(20.0, 0.25 * float(np.percentile(chroma, 98)))
    # Closing with the 3x3 cross bridges a striped shape's dark stripes; the border is padded so
    # that a shape touching it is not eroded away.
    closed = ndimage.binary_closing(np.pad(chroma > level, 1), structure=ndimage.generate_binary_structure(2, 1))[
        1:-1, 1:-1
    ]
    small = _largest(closed)
    area = float(ndimage.binary_fill_holes(small).sum()) if small is not None else 0.0
    if area < MIN_AREA:
        return None
    # Traced at 4x: the saturation map interpolated (pixel centres aligned), the closed stripes kept in.
    fine = _largest(
        ndimage.zoom(
            np.where(closed, np.maximum(chroma, 1.01 * level), chroma),
            UPSAMPLE,
            order=1,
            mode="nearest",
            grid_mode=True,
        )
        > level
    )
    filled = ndimage.binary_fill_holes(fine)
    ys, xs = np.nonzero(filled)
    ys, xs = ys + 0.5, xs + 0.5
    dy, dx = ys - ys.mean(), xs - xs.mean()
    direction = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * DIRECTIONS).astype(int) % DIRECTIONS
    radius = np.zeros(DIRECTIONS)
    np.maximum.at(radius, direction, np.hypot(dy, dx))
    harmonics = np.fft.rfft(radius) / (DIRECTIONS / 2) / radius.mean()
    # Sample k stands for the direction (k + 1/2) steps from -pi: the half step is added back.
    angle = float(np.degrees((-np.angle(harmonics[4]) / 4 + np.pi / DIRECTIONS) % (np.pi / 2)))
    inside = pixels[small]
    lit = inside[inside.sum(-1) >= np.median(inside.sum(-1))].mean(0)
    return {
        "area": area,
        "hole": 1.0 - float(fine.sum()) / float(filled.sum()),
        "roundness": float(radius.std() / radius.mean()),
        "lobes3": float(abs(harmonics[3])),
        "lobes4": float(abs(harmonics[4])),
        "axis_angle": min(angle, 90.0 - angle),
        "colour": min(BASE_RGB, key=lambda name: float(((lit - np.array(BASE_RGB[name])) ** 2).sum())),
    }


def _largest(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected region of ``mask``, or None where it is empty."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def read_geometry(image) -> dict[str, str]:
    """``{"shape", "colour"}`` of ``image`` by its pixels: a world shape or ``"unclear"``, a world
    colour or ``"none"``."""
    found = measure_shape(image)
    if found is None:
        return {"shape": "unclear", "colour": "none"}
    return {"shape": _shape_of(found), "colour": found["colour"]}


def _shape_of(found: dict) -> str:
    if found["roundness"] < ROUND:
        return "ring" if found["hole"] >= RING_HOLE else "circle"
    if found["lobes3"] >= TRIANGLE_LOBES and found["lobes3"] > found["lobes4"]:
        return "triangle"
    if found["lobes4"] >= FOUR_LOBES:
        return "cross" if found["axis_angle"] < AXIS_ANGLE else "square"
    return "unclear"


def _named_shape(concept: str) -> str | None:

    return next((NOUN_TO_SHAPE[w] for w in concept.lower().split() if w in NOUN_TO_SHAPE), None)


def outlined(concept: str) -> bool:
    """Whether an outline can show ``concept``: it names a shape (a colour or style alone, no)."""
    return _named_shape(concept) is not None


def shows(reading: dict[str, str], concept: str) -> bool:
    """Whether an outline reading is ``concept``: its shape, and its colour where it names one
    ("blue square"). A concept without a shape (a colour or style alone) is never shown."""

    shape = _named_shape(concept)
    colour = next((w for w in concept.lower().split() if w in COLOURS), None)
    return shape is not None and reading["shape"] == shape and (colour is None or reading["colour"] == colour)
