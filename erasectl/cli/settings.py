"""The ``erase`` options made from the methods' declared settings (``erasectl.methods.base.setting``):
one option per setting name across every registered method, plugins included, with each method's
help text, so an option and its field cannot drift apart."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import typer


@dataclass
class SettingOption:
    """One option: the declaration it comes from (the first method's) and each method's help."""

    name: str
    type: type
    flag: str | None
    helps: dict[str, list[str]] = field(default_factory=dict)  # help text -> the methods that use it

    def help(self, method_count: int) -> str:
        if len(self.helps) == 1 and len(next(iter(self.helps.values()))) == method_count:
            return next(iter(self.helps))
        return " ".join(f"{', '.join(methods)}: {text}" for text, methods in self.helps.items())


def setting_options() -> dict[str, SettingOption]:
    """Every declared setting of every registered method, in the order first declared."""
    from erasectl.methods import get_method, method_names

    found: dict[str, SettingOption] = {}
    for method_name in method_names():
        for name, declaration in get_method(method_name).config_class.declarations().items():
            option = found.setdefault(name, SettingOption(name, declaration.type, declaration.flag))
            if option.type is not declaration.type:
                raise TypeError(
                    f"setting {name!r} is {option.type.__name__} in one method and {declaration.type.__name__} in {method_name}; give them one type or two names"
                )
            option.helps.setdefault(declaration.help, []).append(method_name)
    return found


def setting_parameters() -> list[inspect.Parameter]:
    """Keyword parameters for a typer command, one per setting; None means "not given"."""
    from erasectl.methods import method_names

    count = len(method_names())
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None,
                option.flag or f"--{name.replace('_', '-')}",
                help=option.help(count),
                rich_help_panel="Method settings (see erasectl defaults)",
            ),
            annotation=option.type,
        )
        for name, option in setting_options().items()
    ]


def with_settings(command):
    """``command`` (which takes ``method`` and ``**settings``) with the settings as its declared
    options, and ``--method``'s help naming every registered method."""
    from erasectl.methods import get_method, method_names

    signature = inspect.signature(command)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    methods = "; ".join(f"{name}: {get_method(name).summary.rstrip('.')}" for name in method_names())
    fixed = [
        p.replace(default=typer.Option(p.default.default, *p.default.param_decls, help=f"The erasure method. {methods}"))
        if p.name == "method" else p
        for p in fixed
    ]  # fmt: skip
    command.__signature__ = signature.replace(parameters=fixed + setting_parameters())
    return command
