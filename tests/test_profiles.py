"""Which defaults and policies apply is decided by what the model is (its folder's marker), never
by its name; real models get the papers' settings, each with its source."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from erasectl.assets import embedded_pipeline_dir
from erasectl.cli import app
from erasectl.models import model_profile
from erasectl.profiles import MARKER

runner = CliRunner()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("copies")
    marked, unmarked = root / "marked", root / "unmarked"
    shutil.copytree(embedded_pipeline_dir(), marked)
    shutil.copytree(embedded_pipeline_dir(), unmarked)
    (unmarked / MARKER).unlink()
    return marked, unmarked


def test_the_same_weights_by_path_behave_as_the_embedded_model(copies, tmp_path):
    from safetensors.torch import load_file

    marked, unmarked = copies
    assert model_profile(None).name == model_profile(str(marked)).name == "shapes-world"
    assert model_profile(str(unmarked)).name == "paper"
    runs = {}
    for name, model in (
        ("embedded", []),
        ("by-path", ["--model", str(marked)]),
        ("unmarked", ["--model", str(unmarked)]),
    ):
        out = tmp_path / name
        result = runner.invoke(
            app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(out), "--json", *model]
        )
        assert result.exit_code == 0, result.output
        runs[name] = (json.loads(result.stdout), load_file(out / "erased.safetensors"))
    (embedded, tensors), (by_path, path_tensors) = runs["embedded"], runs["by-path"]
    assert embedded["config"] == by_path["config"] and embedded["profile"] == by_path["profile"] == "shapes-world"
    assert embedded["preserve"] == by_path["preserve"] and embedded["preserve"]
    assert tensors.keys() == path_tensors.keys() and all(torch.equal(tensors[k], path_tensors[k]) for k in tensors)
    unmarked_run = runs["unmarked"][0]
    assert (
        unmarked_run["profile"] == "paper" and unmarked_run["config"]["lamb"] == 0.5 and unmarked_run["preserve"] == []
    )


def test_defaults_prints_each_set_with_sources(copies):
    marked, unmarked = copies
    found = {}
    for name, model in (("world", []), ("paper", ["--model", str(unmarked)])):
        result = runner.invoke(app, ["defaults", "--json", *model])
        assert result.exit_code == 0, result.output
        found[name] = json.loads(result.stdout)
    assert found["world"]["profile"] == "shapes-world" and found["paper"]["profile"] == "paper"
    paper = found["paper"]["defaults"]
    assert (
        paper["esd"]["mode"]["value"] == "faithful"
        and paper["esd"]["lr"]["value"] == 5e-5
        and paper["esd"]["negative_guidance"]["value"] == 1.0
    )
    assert "esd_sd.py" in paper["esd"]["lr"]["source"]
    assert paper["ablate"]["away"]["value"] == 0.0 and "concept-ablation" in paper["ablate"]["lr"]["source"]
    assert paper["uce"]["lamb"]["value"] == 0.5 and paper["uce"]["token_positions"]["value"] == "last"
    assert all(entry["source"] for method in paper.values() for entry in method.values())
    world = found["world"]["defaults"]
    assert world["esd"]["mode"]["value"] == "fast" and world["esd"]["negative_guidance"]["source"].startswith(
        "shapes world"
    )
    text = runner.invoke(app, ["defaults", "--method", "uce"]).stdout
    assert "--lamb" in text and "0.1" in text


def test_an_internal_error_is_not_dressed_as_a_usage_error(monkeypatch, capsys):
    """A library failing inside a command: exit 1 with the traceback, not 'error: ...' and exit 2."""
    import sys

    import erasectl.models
    from erasectl.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a library broke")

    monkeypatch.setattr(erasectl.models, "load_pipeline", broken)
    monkeypatch.setattr(sys, "argv", ["erasectl", "generate", "--prompts", "a red circle", "--n", "1", "--quiet"])
    with pytest.raises(SystemExit) as stopped:
        main()
    stderr = capsys.readouterr().err
    assert stopped.value.code == 1
    assert "Traceback" in stderr and "RuntimeError: a library broke" in stderr and "internal error" in stderr
    assert not stderr.startswith("error:")


def test_a_config_value_out_of_range_is_still_the_users_mistake(tmp_path):
    result = runner.invoke(app, ["erase", "--concept", "circle", "--lr", "-1", "--out", str(tmp_path / "x")])
    assert (
        result.exit_code == 2
        and "lr must be positive" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
