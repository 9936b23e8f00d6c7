"""What a diffusion-transformer family tells the rest of erasectl, in one class per family.

A family module (``erasectl/families/<name>.py``) defines one subclass of :class:`TransformerFamily`
and names its instance ``FAMILY``; ``erasectl.families`` finds it by the denoiser's class name, so the
next family diffusers ships (FLUX.2, Qwen-Image) is one new file here.

Every method sees one *conditioning* tensor per prompt, as for the UNet families: the text tokens the
denoiser reads (``encoder_hidden_states``), then extra rows that carry the pooled text vector and,
for a guidance-distilled model, the guidance value it is given as an input. ``erasectl.architecture``
packs and unpacks those rows; a family says how to encode prompts and how to call its denoiser.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

# How a family applies guidance when it samples:
#   classifier-free  two passes (without and with the text), combined by the guidance scale (SD3)
#   distilled        one pass, the guidance scale an input of the denoiser (FLUX.1-dev)
#   none             one pass, no guidance at all (FLUX.1-schnell, timestep-distilled)
GUIDANCE_KINDS = ("classifier-free", "distilled", "none")


# One rule of an original (single-file) layout: a diffusers module name (a regex, its groups
# numbered blocks), the original module it becomes (a template over those groups; empty: the
# parameter stands alone, at the top), the place of
# its rows when several diffusers modules are fused into one original tensor (None: alone), and
# whether its parameter is named ``scale`` there (the q/k norms).
Rule = tuple[str, str, int | None, bool]


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """The two halves of an adaLN output projection exchanged: the original code orders them
    (shift, scale), diffusers (scale, shift); the same swap goes either way."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def original_place(module: str, rules: list[Rule]) -> tuple[str, int | None, bool]:
    """``(original module, place in its fused tensor or None, named scale)`` of a diffusers module."""
    for pattern, template, order, scale in rules:
        match = re.fullmatch(pattern, module)
        if match is not None:
            return match.expand(template), order, scale
    raise ValueError(f"no original name for {module}")


def original_layout(state: dict[str, torch.Tensor], rules: list[Rule], swapped) -> dict[str, torch.Tensor]:
    """A diffusers transformer's tensors under the original checkpoint's names: each parameter
    renamed by the first rule its module matches, fused ones concatenated along rows in their
    order, the modules ``swapped(name)`` says swapped. A parameter no rule names is an error."""
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    found: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, _, parameter = key.rpartition(".")
        name, order, scale = original_place(module, rules)
        target = f"{name}.{'scale' if scale else parameter}" if name else parameter
        tensor = swap_halves(tensor) if swapped(module) else tensor
        if order is None:
            found[target] = tensor
        else:
            pieces.setdefault(target, {})[order] = tensor
    for target, parts in pieces.items():
        found[target] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return found


class TransformerFamily(ABC):
    """One diffusion-transformer family: its prompt encoding, its denoiser call and its text-only maps."""

    name: ClassVar[str]
    """What ``erasectl.architecture.family`` returns for it (``sd3``, ``flux``)."""
    rules: ClassVar[list[Rule]] = []
    """How its original single-file checkpoint names the transformer's modules (see ``Rule``)."""
    denoiser_class: ClassVar[str]
    """The diffusers class of its denoiser (``pipeline.transformer``)."""

    @abstractmethod
    def guidance(self, transformer) -> str:
        """One of ``GUIDANCE_KINDS``, for this checkpoint."""

    @abstractmethod
    def sequence_length(self, pipeline) -> int:
        """T5 tokens per prompt, as the family's pipeline defaults to."""

    @abstractmethod
    def encode(self, pipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, pooled)`` of each prompt, as the family's pipeline builds them, with gradients to
        whatever in the text encoders requires them."""

    @abstractmethod
    def inputs(self, transformer, latents, timesteps, tokens, pooled, guidance) -> dict:
        """Keyword arguments of the denoiser's ``forward`` for latents (B, C, H, W), the scheduler's
        timesteps (0 to 1000), and per-sample guidance values (ignored where the model takes none)."""

    def output(self, transformer, sample: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The denoiser's output in the latents' own layout."""
        return sample

    def pipeline_latents(self, pipeline, latents: torch.Tensor, pixels: int) -> torch.Tensor:
        """Latents a pipeline returned with ``output_type="latent"``, in the (B, C, H, W) layout."""
        return latents

    def largest_latent(self, transformer) -> int | None:
        """The widest latent the transformer's positions reach, or None for no bound (rotary ones)."""
        return None

    @abstractmethod
    def latent_channels(self, transformer) -> int:
        """Channels of the (B, C, H, W) latents the family's methods work on."""

    @abstractmethod
    def text_maps(self, transformer) -> dict[str, str]:
        """The linear maps whose input is the text encoders' output alone, by module name, and what
        each reads: ``tokens`` (every token row) or ``pooled`` (the pooled vector). The closed forms
        edit these: past them, text and image mix in joint attention, so no later map sees a
        function of the prompt alone."""

    @abstractmethod
    def token_streams(self, pipeline) -> list[tuple[str, int, int]]:
        """The token rows' parts, each tokenized by one tokenizer: ``(tokenizer attribute of the
        pipeline, first row, rows)``, in row order."""

    @abstractmethod
    def sampling_defaults(self, transformer) -> tuple[int, float]:
        """(steps, guidance) the family's pipeline draws with by default."""

    def sampling_sigmas(self, num_steps: int):
        """The sigmas the family's pipeline hands its scheduler (None: ``set_timesteps(num_steps)``)."""
        return None

    def swapped_modules(self, transformer) -> tuple[str, ...]:
        """The adaLN projections whose halves the original orders the other way (see ``swap_halves``)."""
        return ("norm_out.linear",)

    def original_layout(self, transformer) -> dict[str, torch.Tensor]:
        """The transformer's tensors as the family's original single-file checkpoint names them
        (what ComfyUI's diffusion-model loader and diffusers' ``from_single_file`` read)."""
        swapped = self.swapped_modules(transformer)
        return original_layout(transformer.state_dict(), self.rules, lambda module: module in swapped)

    def training_guidance(self, transformer) -> float:
        """The guidance value a distilled model is trained and queried with (unused otherwise)."""
        return 1.0
