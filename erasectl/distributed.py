"""Several processes under ``accelerate launch``: work is split by whole batches and gathered.

Generation is the expensive part of generate, compare and evaluate. Each process draws every
``world``-th batch; the batches are the same as in one process and every image has its own seeded
generator, so the gathered images are bit-identical to a one-process run and everything computed
from them (grids, judge figures) is the same. Only the main process writes files and prints.

Erasure is data parallel over the batch: every process draws the whole batch from the same seeded
generator (so they agree on it without talking), computes the loss on its contiguous part
(``batch_part``), and the gradients, weighted by each part's share, are summed over the processes
before every optimizer step, so that every process holds the same weights and takes the step one
process would take (up to the order of floating-point sums). Sampling that feeds the training
(ESD's trajectory banks, ablation's anchor images) is split the same way and gathered.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from erasectl.errors import UserError


@lru_cache(maxsize=1)
def world() -> tuple[int, int]:
    """``(rank, processes)``; ``(0, 1)`` outside a multi-process launch.

    On a machine without CUDA the processes talk over gloo: accelerate picks that only when told
    the run is on the CPU, which its torchrun launcher (``--multi_gpu``) does not say.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


def is_main_process() -> bool:
    return world()[0] == 0


def my_share(count: int) -> list[int]:
    """Indices of the items (batches) this process handles, round robin."""
    rank, processes = world()
    return list(range(rank, count, processes))


def process_device(requested: str) -> str:
    """``cuda`` means this process's own GPU under a multi-process launch."""
    rank, processes = world()
    if processes > 1 and requested == "cuda":
        from accelerate import PartialState

        return str(PartialState().device)
    return requested


def batch_part(size: int) -> slice:
    """This process's contiguous part of a batch of ``size``; the whole batch in one process."""
    rank, processes = world()
    per = -(-size // processes)
    return slice(min(rank * per, size), min((rank + 1) * per, size))


def check_batch(size: int, what: str) -> None:
    processes = world()[1]
    if size < processes:
        raise UserError(
            f"{what} is {size}, fewer than the {processes} processes: raise it to at least {processes} or launch fewer processes"
        )


def gather_parts(local: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every process's ``batch_part`` of a tensor, joined in rank order along ``dim``, on every process."""
    if world()[1] == 1:
        return local
    from accelerate.utils import gather_object

    return torch.cat([part.to(local.device) for part in gather_object([local.cpu()])], dim)


def sum_over_processes(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its sum over the processes (one all-reduce for all of them)."""
    if world()[1] == 1 or not tensors:
        return
    from accelerate.utils import reduce

    total = reduce(torch.cat([t.reshape(-1) for t in tensors]), "sum")
    offset = 0
    for tensor in tensors:
        tensor.copy_(total[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def gather_in_order(local: dict[int, object], count: int) -> list:
    """Every process's ``{index: result}`` merged into one list in index order, on every process."""
    if world()[1] == 1:
        return [local[i] for i in range(count)]
    from accelerate.utils import gather_object

    merged: dict[int, object] = {}
    for index, result in gather_object(list(local.items())):
        merged[index] = result
    return [merged[i] for i in range(count)]


# Sharded training (FSDP2) ---------------------------------------------------------------------
# ``accelerate launch --config_file fsdp.yaml`` (distributed_type FSDP, fsdp_version 2) shards the
# trained denoiser's parameters, gradients and optimizer state over the processes with accelerate's
# FSDP plugin. Every process then runs every forward pass together (FSDP gathers each layer's
# weights on the fly), so each process still computes the loss on its own part of the batch.


def sharded() -> bool:
    """Whether the launch asks for FSDP (what ``accelerate launch`` sets from an FSDP config)."""
    return world()[1] > 1 and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


@lru_cache(maxsize=1)
def _accelerator():
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("FSDP_VERSION", "1") != "2":  # accelerate's default is FSDP1
        raise UserError(
            "erasectl shards with FSDP2: set fsdp_version: 2 in the accelerate config (FSDP1 wraps the model in another module)"
        )
    plugin = FullyShardedDataParallelPlugin()  # reads the launch's FSDP_* settings
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.distributed_type != DistributedType.FSDP:
        # accelerate runs FSDP only on accelerators; on CPUs the same plugin shards over gloo
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    return accelerator


def shard(module: torch.nn.Module, optimizer):
    """``(module, optimizer)`` prepared by accelerate for FSDP2: the module sharded in place (its
    parameters become DTensors) and the optimizer moved onto them."""
    import warnings

    # diffusers' models return views of their output; erasectl does no in-place op on one
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    return _accelerator().prepare(module, optimizer)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole on every process (all processes must call); others as they are."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shaped_like(whole: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """``whole`` laid out as ``parameter`` is: this process's shard of it for a sharded parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(parameter, DTensor):
        return whole
    whole = whole.to(device=parameter.device, dtype=parameter.dtype)
    return distribute_tensor(whole, parameter.device_mesh, parameter.placements, src_data_rank=None)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (its storage, not a copy); others as they are."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def reshard(module: torch.nn.Module) -> None:
    """Free the gathered weights of every FSDP unit, so that the next forward gathers them afresh."""
    from torch.distributed.fsdp import FSDPModule

    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()
