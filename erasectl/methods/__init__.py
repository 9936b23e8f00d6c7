"""Erasure methods, registered by name. A method is a module with ``Config``, ``NEEDS_ANCHOR`` and
``run(pipeline, request, config, progress) -> ErasureResult``; adding one is one file and one line.
"""

from __future__ import annotations

import importlib

METHODS = {
    "esd": "erasectl.methods.esd",
    "ablate": "erasectl.methods.ablate",
    "uce": "erasectl.methods.uce",
    "nullspace": "erasectl.methods.nullspace",
    "rece": "erasectl.methods.rece",
    "advunlearn": "erasectl.methods.advunlearn",
}


def get_method(name: str):
    from erasectl.errors import UserError

    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
