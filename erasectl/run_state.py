"""Resumable training: periodic and on-interrupt states, and continuing from them bit-identically.

A state is one safetensors file (never a pickle): the trained tensors, the optimizer's moments,
the random generators' states and the method's own tensors (ESD's trajectory bank, ablation's
anchor latents), with the step, the losses so far and the run's settings as JSON metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from erasectl.distributed import full, is_main_process, local, shaped_like, sharded, sum_over_processes, world
from erasectl.errors import TrainingDiverged, UserError
from erasectl.files import write_atomically

STATE_FORMAT = "erasectl.training-state"


class Interrupted(Exception):
    def __init__(self, path: Path, step: int):
        super().__init__(f"interrupted at step {step}; state saved to {path}")
        self.path = path
        self.step = step


@dataclass
class RunControl:
    state_dir: Path | None = None
    checkpointing_steps: int | None = None
    resume_from: Path | None = None
    stop_requested: Callable[[], bool] = field(default=lambda: False)

    def states(self) -> list[Path]:
        if self.state_dir is None or not self.state_dir.is_dir():
            return []
        return sorted(self.state_dir.glob("state-*.safetensors"))

    def latest(self) -> Path:
        found = self.states()
        if not found:
            raise UserError(f"no saved state in {self.state_dir}; run without --resume_from_checkpoint")
        return found[-1]


def save_state(
    path: Path,
    step: int,
    config,
    trained: dict[str, torch.nn.Parameter],
    optimizer,
    generator: torch.Generator,
    losses: list[float],
    extras: dict[str, torch.Tensor],
) -> Path:
    from safetensors.torch import save_file

    tensors = {f"trained.{name}": full(p).detach().cpu().contiguous() for name, p in trained.items()}
    optimizer_state = optimizer.state_dict()
    for index, moments in optimizer_state["state"].items():
        for key, value in moments.items():
            tensors[f"optimizer.{index}.{key}"] = full(torch.as_tensor(value)).detach().cpu().contiguous()
    if not is_main_process():  # under FSDP every process gathered its shards; one writes
        return path
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extras.items() if v is not None})
    metadata = {
        "erasectl.format": STATE_FORMAT,
        "step": str(step),
        "losses": json.dumps(losses),
        "config": json.dumps(asdict(config)),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
    }
    return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_state(path: Path, kind: str, description: str, config) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A saved state's tensors and metadata, checked: readable, of ``kind``, saved with ``config``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read the saved state {path} ({error}); it may be truncated") from None
    if metadata.get("erasectl.format") != kind:
        raise UserError(f"{path} is not an erasectl {description}")
    if json.loads(metadata["config"]) != json.loads(json.dumps(asdict(config))):  # tuples come back as lists
        raise UserError(
            f"the state in {path} was saved with other settings; resume with the same options, or start a new --out"
        )
    return tensors, metadata


def load_state(
    path: Path, config, trained: dict[str, torch.nn.Parameter], optimizer, generator: torch.Generator
) -> tuple[int, list[float], dict[str, torch.Tensor]]:
    """Restore a state into the run; returns ``(step, losses, extras)``."""
    tensors, metadata = read_state(path, STATE_FORMAT, "training state", config)
    with torch.no_grad():
        for name, parameter in trained.items():
            local(parameter).copy_(local(shaped_like(tensors[f"trained.{name}"], parameter)))
    optimizer_state = {"state": {}, "param_groups": json.loads(metadata["param_groups"])}
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            owner = parameters[int(index)]  # moments shaped like their parameter are sharded like it
            value = shaped_like(value, owner) if value.shape == owner.shape else value
            optimizer_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(optimizer_state)
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    extras = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return int(metadata["step"]), json.loads(metadata["losses"]), extras


class StepHook:
    """The end of every training step, shared by the methods: check the loss, step the optimizer,
    report progress, save periodic states, and on a stop request save one and raise ``Interrupted``."""

    def __init__(self, control: RunControl | None, config, trained, optimizer, generator):
        self.control = control or RunControl()
        self.config, self.trained, self.optimizer, self.generator = config, trained, optimizer, generator

    def resume(self) -> tuple[int, list[float], dict[str, torch.Tensor]]:
        if self.control.resume_from is None:
            return 0, [], {}
        return load_state(self.control.resume_from, self.config, self.trained, self.optimizer, self.generator)

    def finish_step(
        self,
        loss: torch.Tensor,
        step: int,
        losses: list[float],
        progress,
        extras: dict[str, torch.Tensor],
        share: float = 1.0,
    ) -> None:
        """``share``: this process's part of the batch, under data parallelism (see distributed)."""

        self.optimizer.zero_grad(set_to_none=True)
        if sharded():  # FSDP averages the gradients over the processes as it reduces them
            (loss * share * world()[1]).backward()
            gradients = []
        else:
            (loss * share).backward()
            gradients = [p.grad for p in self.trained.values() if p.grad is not None]
        value = (loss.detach() * share).reshape(1)
        sum_over_processes([value, *gradients])
        losses.append(check_finite(value, step, self.config))
        self.optimizer.step()
        if progress is not None:
            progress(step + 1, self.config.steps, {"loss": losses[-1]})
        self(step + 1, losses, extras)

    def __call__(self, step: int, losses: list[float], extras: dict[str, torch.Tensor]) -> None:
        control = self.control
        every = control.checkpointing_steps
        stop = control.stop_requested()
        if control.state_dir is None or not (stop or (every and step % every == 0 and step < self.config.steps)):
            return

        path = control.state_dir / f"state-{step:06d}.safetensors"
        if is_main_process() or sharded():  # every process holds the same state, or its shard of it
            save_state(path, step, self.config, self.trained, self.optimizer, self.generator, losses, extras)
        if stop:
            raise Interrupted(path, step)


def check_finite(loss: torch.Tensor, step: int, config) -> float:
    """The loss as a float, or ``TrainingDiverged`` naming the step and the hyper-parameters."""
    value = loss.item()
    if not math.isfinite(value):
        settings = ", ".join(f"{k}={v}" for k, v in asdict(config).items())
        raise TrainingDiverged(f"the loss became {value} at step {step + 1} ({settings}); lower --lr and run again")
    return value
