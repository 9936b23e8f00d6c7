"""What the built-in methods share: losses, batched UNet calls, the trained/frozen UNet pair, the closed forms' last step."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from erasectl.architecture import component_name, denoiser, predict_noise
from erasectl.checkpoint import LORA_DOWN, LORA_UP, lora_merged
from erasectl.distributed import full, local, reshard, shard, sharded
from erasectl.errors import UserError
from erasectl.methods.base import Progress
from erasectl.parameter_groups import (
    TEXT_ENCODER_GROUP,
    lora_targets,
    select_parameters,
    select_text_encoder_parameters,
)

ADAPTER = "erasectl"  # the peft adapter's name while a LoRA trains


def distance(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return torch.nn.functional.l1_loss(prediction, target)
    return torch.nn.functional.mse_loss(prediction, target)


def unet_calls(unet_fn, latents, timesteps, conditions: list[torch.Tensor], batched: bool = True) -> list[torch.Tensor]:
    """The UNet under each text condition at the same x_t: one batched call, or one call each."""
    if not batched:
        return [unet_fn(latents, timesteps, c) for c in conditions]
    n = len(conditions)
    return list(unet_fn(latents.repeat(n, 1, 1, 1), timesteps.repeat(n), torch.cat(conditions)).chunk(n))


@contextmanager
def modules_restored(*modules: torch.nn.Module):
    """Leave the caller's modules (the UNet, the text encoders) in the train/eval mode and with the
    ``requires_grad`` flags they came with, and without gradients, whether the erasure inside
    finishes or raises."""
    modules = tuple(m for m in modules if m is not None)
    was_training = [m.training for m in modules]
    flags = [{name: p.requires_grad for name, p in m.named_parameters()} for m in modules]
    try:
        yield
    finally:
        for module, training, flag in zip(modules, was_training, flags):
            remove_adapters(module)
            module.train(training)
            module.zero_grad(set_to_none=True)
            for name, parameter in module.named_parameters():
                parameter.requires_grad_(flag[name])


class TrainedUNet:
    """The pipeline's UNet, trained in place, plus the frozen originals of exactly the trained
    tensors. Frozen predictions reuse the same module with the original tensors swapped in by
    ``torch.func.functional_call``, so no second UNet is held in memory.
    """

    trains_text = False  # the text conditioning is the frozen encoders'

    def __init__(self, unet: torch.nn.Module, trained: dict[str, torch.nn.Parameter]):
        self.unet = unet
        self.trained = trained
        self.original = {name: p.detach().clone() for name, p in trained.items()}

    def optimizer(self, make) -> torch.optim.Optimizer:
        """``make(parameters)``, the optimizer of the trained parameters. Under FSDP accelerate shards
        the denoiser with it: the parameters (and the originals' copies) become each process's shards."""
        optimizer = make(list(self.trained.values()))
        if sharded() and not self.trains_text:
            self.unet, optimizer = shard(self.unet, optimizer)
            self.trained = {name: p for name, p in self.unet.named_parameters() if name in self.trained}
            self.original = {name: p.detach().clone() for name, p in self.trained.items()}
        return optimizer

    def __call__(self, latents, timesteps, hidden_states) -> torch.Tensor:
        return predict_noise(self.unet, latents, timesteps, hidden_states)

    @torch.no_grad()
    def frozen(self, latents, timesteps, hidden_states) -> torch.Tensor:
        if not sharded():
            return predict_noise(self.unet, latents, timesteps, hidden_states, self.original)
        with originals_in_place(self.unet, self.trained, self.original):
            return predict_noise(self.unet, latents, timesteps, hidden_states)

    def checkpoint_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(erased, base)`` tensors under checkpoint keys (whole, also when sharded)."""
        prefix = component_name(self.unet)
        erased = {f"{prefix}.{n}": full(p).detach().clone() for n, p in self.trained.items()}
        base = {f"{prefix}.{n}": full(t) for n, t in self.original.items()}
        return erased, base


@contextmanager
def originals_in_place(module: torch.nn.Module, trained: dict, original: dict):
    """Under FSDP, ``functional_call`` cannot swap tensors (the shards are gathered by FSDP's own
    hooks): each process copies its shard of the originals into the trained parameters for the
    duration, with the gathered weights freed before and after so that no stale copy is used."""
    reshard(module)
    current = {name: local(p).clone() for name, p in trained.items()}
    for name, parameter in trained.items():
        local(parameter).copy_(local(original[name]))
    try:
        yield
    finally:
        reshard(module)
        for name, parameter in trained.items():
            local(parameter).copy_(current[name])


class TrainedTextEncoders(TrainedUNet):
    """The pipeline's text encoders, trained in place (``trained``: their parameters under checkpoint
    keys, ``text_encoder.<name>``), under a frozen UNet. Predictions take conditionings: the trained
    one comes from ``differentiable_conditioning`` through the trained encoders, the frozen one from
    encodings made before training, so the frozen prediction is the UNet's under no gradient."""

    trains_text = True

    @torch.no_grad()
    def frozen(self, latents, timesteps, hidden_states) -> torch.Tensor:
        return predict_noise(self.unet, latents, timesteps, hidden_states)

    def checkpoint_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {n: p.detach().clone() for n, p in self.trained.items()}, dict(self.original)


def remove_adapters(module: torch.nn.Module) -> None:
    """Take out a LoRA's peft layers, if any are left (a run that raised): the module's own layers
    and weights come back."""
    if getattr(module, "_hf_peft_config_loaded", False):
        module.unload_lora()


class TrainedLora(TrainedUNet):
    """Rank-``rank`` LoRA adapters (peft, through diffusers' ``add_adapter``) on ``targets``, the
    denoiser's Linear layers, trained in place of their weights. peft starts each adapter's up
    factor at zero, so the adapters' initial tensors are the frozen model, which ``frozen`` swaps in
    as for full training. ``checkpoint_tensors`` returns the factors, ``<module>.lora_down.weight``
    (rank x in) and ``<module>.lora_up.weight`` (out x rank, the scale alpha/rank folded in), and
    leaves the denoiser with its own layers holding W0 + up @ down."""

    def __init__(self, unet: torch.nn.Module, targets: list[str], rank: int):
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), adapter_name=ADAPTER)
        self.targets = targets
        trained = {n: p for n, p in unet.named_parameters() if f".{ADAPTER}." in n}
        for parameter in trained.values():
            parameter.requires_grad_(True)
        super().__init__(unet, trained)

    @torch.no_grad()
    def checkpoint_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        prefix = component_name(self.unet)
        erased, base = {}, {}
        for name in self.targets:
            layer = self.unet.get_submodule(name)
            erased[f"{prefix}.{name}{LORA_DOWN}"] = full(layer.lora_A[ADAPTER].weight).detach().float().clone()
            erased[f"{prefix}.{name}{LORA_UP}"] = (
                full(layer.lora_B[ADAPTER].weight).detach().float() * layer.scaling[ADAPTER]
            )
            base[f"{prefix}.{name}.weight"] = full(layer.base_layer.weight).detach().clone()
        if sharded():  # a sharded denoiser is not drawn from after the erasure
            return erased, base
        self.unet.unload_lora()
        for name in self.targets:  # the module left as applying the checkpoint leaves it
            key = f"{prefix}.{name}"
            weight = self.unet.get_submodule(name).weight
            weight.copy_(lora_merged(base[f"{key}.weight"], erased[f"{key}{LORA_DOWN}"], erased[f"{key}{LORA_UP}"]))
        return erased, base


def trained_model(pipeline, group: str, unet_groups: tuple[str, ...], unet=None, lora_rank: int = 0):
    """What an erasure trains: the text encoders for the ``text-encoder`` group, else the UNet's
    ``group`` (one of ``unet_groups``), or with ``lora_rank`` LoRA adapters on its Linear layers;
    ``unet``: another copy of the pipeline's UNet to train."""

    unet = denoiser(pipeline) if unet is None else unet
    if group == TEXT_ENCODER_GROUP and sharded():
        raise UserError(
            "FSDP shards the denoiser, and --parameter-group text-encoder trains the text encoders: "
            "choose a denoiser group or launch without FSDP"
        )
    if group == TEXT_ENCODER_GROUP:
        return TrainedTextEncoders(unet, select_text_encoder_parameters(pipeline))
    if lora_rank:
        return TrainedLora(unet, lora_targets(unet, group, unet_groups), lora_rank)
    return TrainedUNet(unet, select_parameters(unet, group, unet_groups))


@torch.no_grad()
def write_solved(
    projections: list[tuple[str, torch.nn.Module]], solve_one, progress: Progress | None, component: str = "unet"
) -> tuple[dict, dict]:
    """The closed forms' last step: each denoiser projection's weight replaced, in place, by
    ``solve_one(name, original weight)``; returns ``(erased, base)`` under checkpoint keys
    (``component``: the denoiser's, ``unet`` or ``transformer``)."""
    erased, base = {}, {}
    for done, (name, module) in enumerate(projections, start=1):
        w0 = module.weight.detach().clone()
        base[f"{component}.{name}.weight"] = w0
        module.weight.copy_(solve_one(name, w0).to(w0.dtype))
        erased[f"{component}.{name}.weight"] = module.weight.detach().clone()
        if progress is not None:
            progress(done, len(projections), {"loss": 0.0})
    return erased, base
