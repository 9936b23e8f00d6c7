"""The method contract and registry: every declared setting is an erase option and the reverse,
help texts come from the declarations, bad values are refused, requests that contradict themselves too."""

import inspect
import re

import pytest
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.cli.erase import command
from erasectl.errors import UserError
from erasectl.methods import get_method, method_names
from erasectl.methods.base import ALL_FAMILIES, Method

runner = CliRunner()
RUN_OPTIONS = {
    "--concept",
    "--method",
    "--anchor",
    "--preserve",
    "--keep-words",
    "--concept-type",
    "--auto-preserve",
    "--concepts-file",
    "--anchor-prompts-file",
    "--prior-exclude",
    "--model",
    "--out",
    "--force",
    "--mixed-precision",
    "--gradient-checkpointing",
    "--checkpointing_steps",
    "--resume_from_checkpoint",
    "--device",
    "--model-config",
    "--allow-pickle",
    "--quiet",
    "--json",
}


def _cli_options() -> dict[str, object]:
    found = {}
    for parameter in inspect.signature(command()).parameters.values():
        for declared in getattr(parameter.default, "param_decls", None) or []:
            found[declared.split("/")[0]] = parameter.default
    return found


def _declared() -> dict[str, set[str]]:
    """Each declared setting's option, and the methods that declare it."""
    found: dict[str, set[str]] = {}
    for name in method_names():
        for declaration in get_method(name).config_class.declarations().values():
            found.setdefault(declaration.option, set()).add(name)
    return found


def test_every_declared_setting_is_an_option_and_every_other_option_a_run_option():
    options, declared = _cli_options(), _declared()
    assert not set(declared) - set(options), f"settings without an erase option: {set(declared) - set(options)}"
    assert not set(options) - set(declared) - RUN_OPTIONS, (
        f"erase options that are neither a setting nor a run option: {set(options) - set(declared) - RUN_OPTIONS}"
    )
    assert not set(declared) & RUN_OPTIONS


@pytest.mark.parametrize("name", method_names())
def test_each_methods_help_text_reaches_its_option(name):
    options = _cli_options()
    for declaration in get_method(name).config_class.declarations().values():
        help_text = options[declaration.option].help
        if help_text == declaration.help:
            continue  # every method declares this setting with this help
        before, found, _ = help_text.partition(f": {declaration.help}")
        methods = re.search(r"([a-z][a-z0-9_-]*(?:, [a-z][a-z0-9_-]*)*)$", before)
        assert found and methods and name in methods.group(1).split(", "), (name, declaration.option, help_text)


@pytest.mark.parametrize("name", method_names())
def test_every_method_meets_the_contract(name):
    method = get_method(name)
    assert isinstance(method, Method) and method.name == name and method.summary
    assert set(method.families) <= set(ALL_FAMILIES)
    assert method.accepts_anchor or not method.needs_anchor


@pytest.mark.parametrize(
    "name, bad",
    [
        ("esd", {"steps": 0}),
        ("esd", {"negative_guidance": 0}),
        ("esd", {"mode": "slow"}),
        ("esd", {"batch_size": 0}),
        ("ablate", {"target": "image"}),
        ("ablate", {"anchor_images": 0}),
        ("ablate", {"parameter_group": "esd-x"}),
        ("uce", {"lamb": 0}),
        ("uce", {"token_positions": "all"}),
        ("esd", {"loss": "l3"}),
        ("ablate", {"lr": -1.0}),
        ("rece", {"rounds": -1}),
        ("nullspace", {"null_threshold": 1.5}),
        ("advunlearn", {"attack_share": 0}),
    ],
)
def test_bad_hyper_parameters_are_refused_by_the_config(name, bad):
    with pytest.raises(ValueError):
        get_method(name).config_class(**bad)


def test_an_unknown_method_is_one_line():
    with pytest.raises(UserError, match="choose one of esd, ablate"):
        get_method("esd-x")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--concept", "circle,circle"], "'circle' is named twice"),
        (["--concept", "circle", "--method", "ablate", "--anchor", "Circle"], "is the concept being erased"),
        (["--concept", "circle", "--preserve", "ring,circle"], "'circle' is both erased and preserved"),
        (["--concept", "circle", "--method", "esd", "--anchor", "shape"], "--anchor is not an option of --method esd"),
        (
            ["--concept", "circle", "--method", "uce", "--warmup-steps", "3"],
            "--warmup-steps is not an option of --method uce",
        ),
    ],
)
def test_a_request_that_contradicts_itself_is_refused_before_anything_runs(args, message, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["erase", *args, "--out", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_the_settings_page_is_made_from_the_declarations():
    from pathlib import Path

    from erasectl.cli.defaults import settings_markdown

    page = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
    assert page.read_text() == settings_markdown(method_names()), (
        "docs/settings.md is stale: run erasectl defaults --markdown > docs/settings.md"
    )
