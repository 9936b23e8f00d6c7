"""RECE: its adversarial map, its rounds, and the attack rounds that erase what the soft prompt finds."""

import json

import pytest
import torch
from typer.testing import CliRunner

from erasectl.attacks import (
    AttackConfig,
    concept_latents,
)
from erasectl.cli import app
from erasectl.models import load_pipeline

runner = CliRunner()


PROMPTS = ["a red circle", "a blue circle"]


def test_rece_adversarial_map_is_the_identity_without_an_edit_and_rece_erases_more_rows(tmp_path):
    from erasectl.methods.rece import adversarial_map

    torch.manual_seed(0)
    weights = {"k": torch.randn(8, 6), "v": torch.randn(8, 6)}
    assert torch.allclose(adversarial_map(weights, weights, 1e-3, "1st"), torch.eye(6, dtype=torch.float64), atol=1e-8)
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "2",
            "--attack-rounds",
            "0",
            "--out",
            str(tmp_path / "rece"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    recipe = json.loads(result.stdout)
    assert recipe["adversarial_rows"] == 2 * (recipe["erased_rows"] // 3) and recipe["config"]["rounds"] == 2


def test_attack_rounds_erase_what_the_attack_finds(tmp_path):
    """One round in the loop: the soft-prompt token's rows join the erased ones, and the round is
    recorded in the recipe (how much it buys is measured by benchmarks/attacks.py)."""
    plain = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "0",
            "--attack-rounds",
            "0",
            "--out",
            str(tmp_path / "plain"),
            "--json",
        ],
    )
    looped = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "0",
            "--attack-rounds",
            "1",
            "--attack-steps",
            "5",
            "--out",
            str(tmp_path / "looped"),
            "--json",
        ],
    )
    assert plain.exit_code == 0 and looped.exit_code == 0, looped.output
    first, second = json.loads(plain.stdout), json.loads(looped.stdout)
    assert [r["round"] for r in second["attack_rounds"]] == [1] and second["erased_rows"] > first["erased_rows"]
    assert "attack_rounds" not in first
    # the defence's attack learns from images of its own, never those evaluate's attack draws
    from erasectl.attacks import defence_config

    pipeline = load_pipeline()
    evaluated, _ = concept_latents(pipeline, PROMPTS, AttackConfig(seed=0))
    defended, _ = concept_latents(pipeline, PROMPTS, AttackConfig(seed=second["attack_rounds"][0]["seed"]))
    assert second["attack_rounds"][0]["seed"] == defence_config(0, 0, 5).seed != 0
    assert not torch.allclose(evaluated, defended)


def test_rece_regzero_is_the_authors_close_form_emb_regzero():
    """Their eq. 8 regularised toward zero, transcribed: M = (r I + sum W'^T W')^-1 sum W'^T W0 over
    keys and values, with W' the edited weights and W0 the original ones."""
    from erasectl.methods.rece import RECEConfig, adversarial_map

    generator = torch.Generator().manual_seed(3)
    originals = {n: torch.randn(8, 6, generator=generator) for n in ("k", "v")}
    edited = {n: w + 0.3 * torch.randn(8, 6, generator=generator) for n, w in originals.items()}
    r = 1e-3
    left = r * torch.eye(6, dtype=torch.float64) + sum(edited[n].double().T @ edited[n].double() for n in edited)
    right = sum(edited[n].double().T @ originals[n].double() for n in edited)
    torch.testing.assert_close(
        adversarial_map(edited, originals, r, "regzero"), torch.linalg.inv(left) @ right, rtol=1e-5, atol=1e-8
    )
    # the embedding it finds minimises sum ||W' e - W0 c||^2 + r ||e||^2: no other embedding does better
    concept = torch.randn(6, generator=generator).double()

    def objective(e):
        return (
            sum((edited[n].double() @ e - originals[n].double() @ concept).pow(2).sum() for n in edited)
            + r * e.pow(2).sum()
        )

    found = adversarial_map(edited, originals, r, "regzero") @ concept
    assert objective(found) < objective(concept)
    for _ in range(20):
        assert objective(found) <= objective(found + 1e-3 * torch.randn(6, generator=generator).double())
    assert RECEConfig().adversarial_solve == "regzero"
    with pytest.raises(ValueError):
        RECEConfig(adversarial_solve="2nd")
