"""Several processes under ``accelerate launch``: work is split by whole batches and gathered.

Generation is the expensive part of generate, compare and evaluate. Each process draws every
``world``-th batch; the batches are the same as in one process and every image has its own seeded
generator, so the gathered images are bit-identical to a one-process run and everything computed
from them (grids, judge figures) is the same. Only the main process writes files and prints.
"""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def world() -> tuple[int, int]:
    """``(rank, processes)``; ``(0, 1)`` outside a multi-process launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def is_main_process() -> bool:
    return world()[0] == 0


def my_share(count: int) -> list[int]:
    """Indices of the items (batches) this process handles, round robin."""
    rank, processes = world()
    return list(range(rank, count, processes))


def gather_in_order(local: dict[int, object], count: int) -> list:
    """Every process's ``{index: result}`` merged into one list in index order, on every process."""
    if world()[1] == 1:
        return [local[i] for i in range(count)]
    from accelerate.utils import gather_object

    merged: dict[int, object] = {}
    for index, result in gather_object(list(local.items())):
        merged[index] = result
    return [merged[i] for i in range(count)]
