"""The method registry and its configs: every hyper-parameter has a CLI option; bad values are refused."""

import inspect
from dataclasses import fields

import pytest

from erasectl.cli.erase import erase
from erasectl.methods import METHODS, get_method


def _cli_options() -> set[str]:
    options = set()
    for parameter in inspect.signature(erase).parameters.values():
        options.update(getattr(parameter.default, "param_decls", None) or [])
    return {o.split("/")[0] for o in options}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_config_field_has_a_cli_option(name):
    options = _cli_options()
    missing = [f.name for f in fields(get_method(name).Config) if f"--{f.name.replace('_', '-')}" not in options and f"--{f.name}" not in options]
    assert not missing, f"{name}: no erase option for {missing}"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_config_field_is_documented(name):
    for f in fields(get_method(name).Config):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"


@pytest.mark.parametrize(
    "name, bad",
    [("esd", {"steps": 0}), ("esd", {"negative_guidance": 0}), ("esd", {"mode": "slow"}), ("esd", {"batch_size": 0}),
     ("ablate", {"target": "image"}), ("ablate", {"anchor_images": 0}), ("ablate", {"parameter_group": "esd-x"}),
     ("uce", {"lamb": 0}), ("uce", {"token_positions": "all"}), ("esd", {"loss": "l3"}), ("ablate", {"lr": -1.0})],
)
def test_bad_hyper_parameters_are_refused_by_the_config(name, bad):
    with pytest.raises(ValueError):
        get_method(name).Config(**bad)
