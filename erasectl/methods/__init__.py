"""Erasure methods by name: the built-in ones, and any other package's registered under the
entry-point group ``erasectl.methods`` (``name = "module:MethodClass"``). The contract a method
meets is ``erasectl.methods.base.Method``; ``docs/adding-a-method.md`` walks through one.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from erasectl.errors import UserError
from erasectl.methods.base import Method

ENTRY_POINT_GROUP = "erasectl.methods"
BUILT_IN = {
    "esd": "erasectl.methods.esd:ESD",
    "ablate": "erasectl.methods.ablate:Ablate",
    "uce": "erasectl.methods.uce:UCE",
    "nullspace": "erasectl.methods.nullspace:NullSpace",
    "rece": "erasectl.methods.rece:RECE",
    "advunlearn": "erasectl.methods.advunlearn:AdvUnlearn",
}


class PluginError(Exception):
    """An installed package registers a method that breaks the contract: its author's bug, not the user's."""


@cache
def registered() -> dict[str, str]:
    """Every method's name and ``module:class``: the built-ins first, then the installed plugins."""
    found = dict(BUILT_IN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in BUILT_IN:
            raise PluginError(
                f"the package providing entry point {entry.value!r} registers the method name {entry.name!r}, which is built in; rename it"
            )
        found[entry.name] = entry.value
    return found


def method_names() -> list[str]:
    return list(registered())


@cache
def get_method(name: str) -> Method:
    """The method registered as ``name``, or a one-line ``UserError`` naming the choices."""
    known = registered()
    if name not in known:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(known)}")
    module_name, _, class_name = known[name].partition(":")
    method_class = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(method_class, type) and issubclass(method_class, Method)):
        raise PluginError(
            f"{known[name]!r}, registered as method {name!r}, is not a subclass of erasectl.methods.base.Method"
        )
    if method_class.name != name:
        raise PluginError(
            f"{known[name]!r} is registered as {name!r} but names itself {method_class.name!r}; make the two equal"
        )
    method_class.config_class.declarations()  # every field declared with setting(): fails at once if not
    return method_class()
