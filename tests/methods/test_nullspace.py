"""The null-space closed form: its constraint holds, its prior is built as documented, and it erases."""

import json

import pytest
import torch
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.erasure import ErasureRequest, build_config, erase_concepts
from erasectl.methods import get_method
from erasectl.methods.nullspace import null_basis, prior_phrases, solve
from erasectl.models import load_pipeline
from erasectl.world.profile import WorldProfile

runner = CliRunner()


def test_the_edit_leaves_prior_rows_unchanged_and_fits_the_concept_where_it_can():
    torch.manual_seed(0)
    width, out = 16, 12
    prior = torch.randn(40, 6, dtype=torch.float64) @ torch.randn(6, width, dtype=torch.float64)  # rank 6
    basis = null_basis(prior, 1e-6)
    assert basis.shape == (width, width - 6)
    w0 = torch.randn(out, width, dtype=torch.float64)
    concept, guide = torch.randn(3, width, dtype=torch.float64), torch.randn(3, width, dtype=torch.float64)
    new = solve(w0, concept, guide, basis, 1e-8)
    assert torch.allclose((new - w0) @ prior.T, torch.zeros(out, 40, dtype=torch.float64), atol=1e-8)  # D K^T = 0
    # the concept's component outside the prior's span is mapped as the guide's output asks
    inside = basis @ basis.T
    fitted = (new - w0) @ concept.T
    wanted = w0 @ (guide - concept).T
    assert torch.allclose(fitted, wanted, atol=1e-4)  # 3 rows, 10 free directions: an exact fit
    assert torch.linalg.matrix_rank(inside) == width - 6
    # no free direction: nothing changes
    assert torch.equal(solve(w0, concept, guide, basis[:, :0], 1e-3), w0)


def test_prior_is_the_vocabulary_less_the_concept_its_paraphrase_and_excluded_words():
    pipeline = load_pipeline()
    config = build_config("nullspace", WorldProfile(), {})
    kept = get_method("nullspace").default_preservation
    prior = prior_phrases(pipeline, ErasureRequest(["circle"], WorldProfile()).resolved(kept), config)
    assert "circle" not in prior and "disc" not in prior  # disc: nearer than a quarter of the median distance
    assert {"ring", "square", "red", "striped", "hoop"} <= set(prior) and "a" not in prior
    held_out = prior_phrases(
        pipeline, ErasureRequest(["circle"], WorldProfile(), prior_exclude=["cross", "ring", "plus", "hoop"]), config
    )
    assert not {"cross", "ring", "plus", "hoop"} & set(held_out) and "square" in held_out
    two_words = prior_phrases(pipeline, ErasureRequest(["blue square"], WorldProfile()).resolved(kept), config)
    assert {"blue shape", "square"} <= set(
        two_words
    ) and "blue square" not in two_words  # a conjunction: each word alone stays


def test_nullspace_erases_a_shape_in_a_fraction_of_a_second_with_its_recipe(world_judge):
    from erasectl.world.judging import shape_report

    pipeline = load_pipeline()
    checkpoint = erase_concepts(
        pipeline, "nullspace", ErasureRequest(["circle"], WorldProfile()), build_config("nullspace", WorldProfile(), {})
    )
    report = shape_report(pipeline, world_judge, [300, 301])
    assert report["circle"]["accuracy"] <= 0.25, report["circle"]
    recipe = checkpoint.recipe
    assert recipe["method"] == "nullspace" and 0 < recipe["prior"]["null_dimensions"] < recipe["prior"]["width"]
    assert recipe["preserve"] == [] and recipe["wall_time_s"] < 5
    assert all(".attn2." in key for key in checkpoint.tensors)


def test_nullspace_options_through_the_cli(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "red circle",
            "--method",
            "nullspace",
            "--prior-exclude",
            "ring,hoop",
            "--null-threshold",
            "0.01",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    recipe = json.loads(result.stdout)
    assert recipe["prior_excluded"] == ["ring", "hoop"] and recipe["config"]["null_threshold"] == 0.01
    assert recipe["preserve"] == ["red shape", "circle"] and recipe["preserve_source"] == "default: words"
    bad = runner.invoke(
        app,
        ["erase", "--concept", "circle", "--method", "uce", "--prior-exclude", "ring", "--out", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2 and "--prior-exclude is an option of --method nullspace only" in bad.output
    bad = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "nullspace",
            "--null-threshold",
            "2",
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert bad.exit_code == 2 and "null_threshold" in bad.output


@pytest.mark.parametrize("concept", ["blue square"])
def test_every_method_keeps_a_multi_word_concepts_words_by_default(concept, tmp_path):
    """A conjunction: each method's recipe preserves the words alone unless --preserve is given."""
    for method, extra in (
        ("esd", ["--steps", "1"]),
        ("ablate", ["--anchor", "blue shape", "--steps", "1", "--anchor-images", "2"]),
        ("uce", []),
        ("nullspace", []),
    ):
        result = runner.invoke(
            app, ["erase", "--concept", concept, "--method", method, *extra, "--out", str(tmp_path / method), "--json"]
        )
        assert result.exit_code == 0, (method, result.output)
        recipe = json.loads(result.stdout)
        assert {"blue shape", "square"} <= set(recipe["preserve"]), (method, recipe["preserve"])
    given = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            concept,
            "--method",
            "esd",
            "--steps",
            "1",
            "--preserve",
            "red square",
            "--out",
            str(tmp_path / "given"),
            "--json",
        ],
    )
    assert json.loads(given.stdout)["preserve"] == ["red square"]


def test_prior_rows_from_short_prompts_equal_the_full_length_ones():
    """The fast path pads prior prompts to their longest; the rows it reads are unchanged."""
    from erasectl.methods.nullspace import short_prompts
    from erasectl.methods.uce import concept_rows

    pipeline = load_pipeline()
    prompts = [("a ring", "ring"), ("a red shape", "red shape"), ("a striped", "striped")]
    for positions in ("last", "through-eos"):
        full, _ = concept_rows(pipeline, [p for p, _ in prompts], [w for _, w in prompts], positions)
        with short_prompts(pipeline, prompts, positions):
            assert pipeline.tokenizer.model_max_length < 77
            short, _ = concept_rows(pipeline, [p for p, _ in prompts], [w for _, w in prompts], positions)
        assert torch.allclose(full, short, atol=1e-5)
    assert pipeline.tokenizer.model_max_length == 77


def test_the_prior_table_is_cached_per_text_encoder_and_changes_nothing(tmp_path, monkeypatch):
    """A real model's prior (a thousand words through CLIP) is encoded once and read from the
    cache after; the edit is the same either way."""
    from erasectl.neighbours import cache_dir

    monkeypatch.setenv("ERASECTL_CACHE", str(tmp_path / "cache"))
    config = build_config("nullspace", WorldProfile(), {"token_positions": "last"})
    first = erase_concepts(load_pipeline(), "nullspace", ErasureRequest(["circle"], WorldProfile()), config)
    files = list((cache_dir().parent / "prior").glob("*.safetensors"))
    assert len(files) == 1
    again = erase_concepts(load_pipeline(), "nullspace", ErasureRequest(["circle"], WorldProfile()), config)
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    files[0].unlink()
    fresh = erase_concepts(load_pipeline(), "nullspace", ErasureRequest(["circle"], WorldProfile()), config)
    assert all(torch.allclose(first.tensors[k], fresh.tensors[k]) for k in first.tensors)
