"""How far an erased model's pictures moved from the base model's, beyond the judge's class.

Two images drawn from the same prompt and seed by the base and the erased model start from the
same noise, so their difference is the erasure's doing:

- judge-feature distance: ``1 - cos`` between the judge's image embeddings (perceptual: colour,
  texture and layout changes move it even when the class stays);
- SSIM in pixels (Wang et al. 2004), computed by torchmetrics: 1 means the same picture.

A distribution distance over many images, FID and KID, is computed by torchmetrics on the judge's
image features (the Inception network torchmetrics would otherwise download is not available
offline; FID on CLIP features is the variant Kynkäänniemi et al. 2023 recommend).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def _pixels(images: list) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
    ).permute(0, 3, 1, 2)


def ssim_pairs(base_images: list, erased_images: list) -> list[float]:
    """SSIM of each pair (same size RGB images), one figure per pair."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if not base_images:
        return []
    base, erased = _pixels(base_images), _pixels(erased_images)
    side = min(base.shape[-2:])
    kernel = min(11, side - (1 - side % 2))  # an odd Gaussian window no larger than the image
    values = structural_similarity_index_measure(erased, base, data_range=1.0, kernel_size=kernel, reduction="none")
    return [float(v) for v in values]


def feature_distances(base_embeds: torch.Tensor, erased_embeds: torch.Tensor) -> list[float]:
    """``1 - cos`` between paired L2-normalised judge embeddings (0: the judge sees the same picture)."""
    return [float(v) for v in (1 - (base_embeds * erased_embeds).sum(dim=1))]


class _JudgeFeatures(torch.nn.Module):
    """torchmetrics calls its feature extractor on what ``update`` is given; erasectl gives it the
    judge's image embeddings, already computed for judging, so this passes them through."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def distribution_distances(base_embeds: torch.Tensor, erased_embeds: torch.Tensor) -> dict:
    """FID and KID (torchmetrics) between two sets of judge image features."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(base_embeds), len(erased_embeds))
    if n < 2:
        return {"fid": None, "kid_mean": None, "kid_std": None, "n": n, "features": "judge image embeddings"}
    dim = base_embeds.shape[1]
    # every process holds all features (evaluate gathers the images): no sum over processes
    fid = FrechetInceptionDistance(feature=_JudgeFeatures(dim), normalize=False, sync_on_compute=False)
    fid.update(base_embeds.double(), real=True)
    fid.update(erased_embeds.double(), real=False)
    subset = min(50, n)
    with warnings.catch_warnings():  # "KID keeps every feature in memory": they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=_JudgeFeatures(dim), subsets=20, subset_size=subset, normalize=False, sync_on_compute=False
        )
    kid.update(base_embeds.double(), real=True)
    kid.update(erased_embeds.double(), real=False)
    torch.manual_seed(0)  # KID draws its subsets at random: fixed, so a report is reproducible
    kid_mean, kid_std = kid.compute()
    return {
        "fid": round(max(float(fid.compute()), 0.0), 4),  # a matrix square root's rounding can give -0.0
        "kid_mean": round(float(kid_mean), 5),
        "kid_std": round(float(kid_std), 5),
        "n": n,
        "kid_subset_size": subset,
        "features": "judge image embeddings",
    }
