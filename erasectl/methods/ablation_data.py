"""Concept Ablation's training data as the authors' diffusers ``train.py`` builds it
(nupurkmr9/concept-ablation, ``diffusers/utils.py``, ``CustomDiffusionDataset``).

Each recipe pairs an anchor prompt with concept prompts of its own form (``concept_forms``; one is
drawn for each sample, as their ``__getprompt__`` draws). With ``anchor_data`` ``augmented`` (their
object recipe) or ``plain`` (their ``--noaug``), the anchor images are decoded once, and every
sample is flipped (``hflip``), rescaled and placed or cropped as their ``preprocess`` does, encoded
again by the VAE, and trained with their masked loss; an image shrunk below 0.6 of its size gets
"a far away " or "very small " before its concept prompt, one enlarged "zoomed in " or "close up ".
``latents`` (erasectl's, the embedded world's) trains on the drawn latents as they are.
"""

from __future__ import annotations

import torch

from erasectl.architecture import decode_latents, encode_images

RECIPES = ("object", "style", "nudity", "violence")
ANCHOR_DATA = ("augmented", "plain", "latents")
# The caption prefixes of a shrunk and an enlarged image (their CustomDiffusionDataset.__getitem__).
SMALL, LARGE = ("a far away ", "very small "), ("zoomed in ", "close up ")
PREFIXES = ("", *SMALL, *LARGE)


def recipe_for(concept_type: str | None) -> str:
    """The recipe a concept type gets: its own where the authors publish one, else the object recipe."""
    return concept_type if concept_type in RECIPES else "object"


def concept_forms(recipe: str, anchor_prompt: str, concept: str, replaced: str) -> list[str]:
    """The concept prompts one anchor prompt may become, each as likely (``replaced``: the anchor
    prompt with the anchor replaced by the concept, the object recipe's only form)."""
    if recipe == "style":  # their r in {0, 1, 2}: the second form twice
        return [f"{anchor_prompt}, in the style of {concept}", *[f"in {concept}'s style, {anchor_prompt}"] * 2]
    if recipe in ("nudity", "violence"):
        return [f"{concept}, {anchor_prompt}", f"in {concept} style, {anchor_prompt}", f"{anchor_prompt}, {concept}"]
    return [replaced]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """One integer in ``[low, high)``, as numpy's ``randint``."""
    return int(torch.randint(low, high, (1,), generator=generator))


def place(image, scale: int, size: int, factor: int, generator: torch.Generator):
    """Their ``preprocess``: ``image`` (PIL, ``size`` square) resized to ``scale``, put at a random
    place in an empty (0) canvas when smaller, a random crop of it when larger; and the latent-sized
    mask of the image's region, one latent pixel in from each edge (all ones for a crop)."""
    import numpy as np
    from PIL import Image

    outer, inner = (scale, size) if scale > size else (size, scale)
    top, left = _randint(0, outer - inner + 1, generator), _randint(0, outer - inner + 1, generator)
    pixels = np.array(image.resize((scale, scale), resample=Image.LANCZOS)).astype(np.uint8)
    pixels = (pixels / 127.5 - 1.0).astype(np.float32)
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    mask = np.zeros((size // factor, size // factor), dtype=np.float32)
    if scale > size:
        canvas = pixels[top : top + inner, left : left + inner, :]
        mask[:] = 1.0
    else:
        canvas[top : top + inner, left : left + inner, :] = pixels
        mask[top // factor + 1 : (top + scale) // factor - 1, left // factor + 1 : (left + scale) // factor - 1] = 1.0
    return torch.from_numpy(canvas).permute(2, 0, 1), torch.from_numpy(mask)


def random_scale(size: int, generator: torch.Generator) -> int:
    """Their scale draw: a third to the full size two times in three, else 1.2 to 1.4 times it."""
    if float(torch.rand(1, generator=generator)) < 0.66:
        return _randint(size // 3, size + 1, generator)
    return _randint(int(1.2 * size), int(1.4 * size), generator)


class AnchorImages:
    """The anchor images, decoded once from their latents, and each iteration's batch of them
    flipped, rescaled and encoded again (``batch``)."""

    def __init__(self, pipeline, latents: torch.Tensor):
        from PIL import Image

        self.vae = pipeline.vae
        self.factor = getattr(pipeline, "vae_scale_factor", 8)
        with torch.no_grad():
            decoded = torch.cat([decode_latents(self.vae, chunk) for chunk in latents.split(8)])
        pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)  # saved as PNG, theirs
        self.images = [Image.fromarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]
        self.size = self.images[0].size[0]

    def batch(self, indices: list[int], augment: bool, hflip: bool, generator: torch.Generator):
        """Latents, latent-sized masks and the caption prefix index (into ``PREFIXES``) of each of
        ``indices``' images, drawn as their dataset draws them."""
        from PIL import ImageOps

        pixels, masks, prefixes = [], [], []
        for index in indices:
            image = self.images[index]
            if hflip and float(torch.rand(1, generator=generator)) < 0.5:
                image = ImageOps.mirror(image)
            scale = random_scale(self.size, generator) if augment else self.size
            canvas, mask = place(image, scale, self.size, self.factor, generator)
            prefix = 0
            if scale < 0.6 * self.size:
                prefix = 1 + _randint(0, 2, generator)
            elif scale > self.size:
                prefix = 3 + _randint(0, 2, generator)
            pixels.append(canvas)
            masks.append(mask)
            prefixes.append(prefix)
        return self.encode(torch.stack(pixels), generator), torch.stack(masks)[:, None], prefixes

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Their training latents: a draw from the VAE's posterior, (shifted and) scaled."""
        return encode_images(self.vae, pixels, generator)


def masked_distance(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Their masked loss: the squared error summed over the image's region and its channels,
    divided by the region's size in latent pixels, averaged over the batch."""
    squared = torch.nn.functional.mse_loss(prediction, target, reduction="none")
    # a region under two latent pixels across has no inside (only on tiny models): it adds nothing
    return ((squared * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3]).clamp(min=1)).mean()
