"""--concept-type: each method's published settings and guide for a kind of concept, under the user's own options."""

import json

import pytest
import torch
from tiny_models import tiny_pipeline
from typer.testing import CliRunner

from erasectl.checkpoint import ErasedCheckpoint
from erasectl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("sd1"), "sd1")


def _erase(model, out, *args):
    result = runner.invoke(
        app, ["erase", "--concept", "circle", "--model", str(model), "--out", str(out), "--quiet", *args]
    )
    assert result.exit_code == 0, result.output
    return ErasedCheckpoint.load(out / "erased.safetensors")


def test_a_style_is_guided_to_art_as_the_uce_script_does(sd1, tmp_path):
    typed = _erase(sd1, tmp_path / "typed", "--method", "uce", "--concept-type", "style")
    named = _erase(sd1, tmp_path / "named", "--method", "uce", "--anchor", "art")
    plain = _erase(sd1, tmp_path / "plain", "--method", "uce")
    assert typed.recipe["concept_type"] == "style" and typed.recipe["anchor"] == "art"
    assert typed.recipe["guides"] == {"circle": "art"} and plain.recipe["guides"] == {"circle": ""}
    for key, tensor in typed.tensors.items():
        assert torch.equal(tensor, named.tensors[key]), key
    assert any(not torch.equal(t, plain.tensors[k]) for k, t in typed.tensors.items())
    # the user's own --anchor wins over the type's guide
    own = _erase(sd1, tmp_path / "own", "--method", "uce", "--concept-type", "style", "--anchor", "ring")
    assert own.recipe["guides"] == {"circle": "ring"}


def test_each_method_takes_its_papers_settings_for_the_type_and_the_users_options_win(sd1, tmp_path):
    esd = ["--method", "esd", "--steps", "1", "--ddim-steps", "2", "--sample-size", "16"]
    nudity = _erase(sd1, tmp_path / "esd-nudity", *esd, "--concept-type", "nudity")
    assert nudity.recipe["config"]["parameter_group"] == "esd-u"
    assert all(".attn2." not in key for key in nudity.tensors)  # ESD-u leaves cross-attention alone
    style = _erase(sd1, tmp_path / "esd-style", *esd, "--concept-type", "style")
    assert style.recipe["config"]["parameter_group"] == "esd-x"
    given = _erase(sd1, tmp_path / "esd-given", *esd, "--concept-type", "nudity", "--parameter-group", "esd-x")
    assert given.recipe["config"]["parameter_group"] == "esd-x"
    rece = _erase(sd1, tmp_path / "rece", "--method", "rece", "--concept-type", "nudity")
    assert (rece.recipe["config"]["rounds"], rece.recipe["config"]["regular_scale"]) == (3, 0.1)
    person = _erase(sd1, tmp_path / "speed", "--method", "nullspace", "--concept-type", "person")
    assert person.recipe["anchor"] == "person"


def test_defaults_lists_a_types_settings_and_a_wrong_type_is_refused(sd1, tmp_path):
    result = runner.invoke(
        app, ["defaults", "--method", "nullspace", "--model", str(sd1), "--concept-type", "style", "--json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["defaults"]["nullspace"]
    assert found["anchor"]["value"] == "art" and "SPEED" in found["anchor"]["source"]
    wrong = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--model",
            str(sd1),
            "--method",
            "uce",
            "--concept-type",
            "styles",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert wrong.exit_code == 2 and "--concept-type styles is not known" in wrong.output
    assert not (tmp_path / "x").exists()
