"""How an erasure runs (bf16 autocast, gradient checkpointing) leaves what it learns in place."""

import json

import torch
from typer.testing import CliRunner

from erasectl.checkpoint import ErasedCheckpoint, component_tensors
from erasectl.cli import app
from erasectl.models import load_pipeline

runner = CliRunner()
SHORT = [
    "--concept",
    "circle",
    "--method",
    "esd",
    "--steps",
    "3",
    "--ddim-steps",
    "4",
    "--trajectory-reuse",
    "2",
    "--quiet",
    "--json",
]


def _erase(out, *extra):
    result = runner.invoke(app, ["erase", *SHORT, *extra, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), ErasedCheckpoint.load(out / "erased.safetensors").tensors


def test_gradient_checkpointing_learns_the_same_and_bf16_the_same_direction(tmp_path):
    _, plain = _erase(tmp_path / "plain")
    recipe, checkpointed = _erase(tmp_path / "checkpointed", "--gradient-checkpointing")
    assert recipe["gradient_checkpointing"] is True
    for key, tensor in plain.items():  # recomputing activations is the same arithmetic
        assert torch.allclose(tensor, checkpointed[key], atol=1e-6), key
    recipe, bf16 = _erase(tmp_path / "bf16", "--mixed-precision", "bf16")
    assert recipe["mixed_precision"] == "bf16"
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in bf16.values())  # fp32 weights
    base = component_tensors(load_pipeline(), list(plain))
    full = torch.cat([(plain[k] - base[k]).flatten() for k in plain])
    half = torch.cat([(bf16[k] - base[k]).flatten() for k in plain])
    assert half.abs().max() > 0
    assert torch.nn.functional.cosine_similarity(full, half, dim=0) > 0.9


def test_fp16_is_refused_with_one_line(tmp_path):
    result = runner.invoke(app, ["erase", *SHORT, "--mixed-precision", "fp16", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "use bf16" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
