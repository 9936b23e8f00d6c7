"""SD3 and FLUX (diffusion transformers, flow matching): tiny pipelines built offline load and draw;
every erasure method refuses them in one line until it supports them."""

import json

import pytest
from tiny_models import t5_tokenizer, tiny_transformer_pipeline
from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module", params=["sd3", "sd3-no-t5", "flux-dev", "flux-schnell"])
def transformer_family(request, tmp_path_factory):
    return request.param, tiny_transformer_pipeline(tmp_path_factory.mktemp(request.param), request.param)


def test_a_t5_tokenizer_built_in_memory_ends_every_text_with_its_end_token():
    tokenizer = t5_tokenizer(["a", "red", "circle"])
    ids = tokenizer("a red circle").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581a", "\u2581red", "\u2581circle", "</s>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a redcircle").input_ids)[-1] == "</s>"


def test_generate_draws_from_a_transformer_family(transformer_family, tmp_path):
    family, folder = transformer_family
    out = tmp_path / "images"
    result = runner.invoke(
        app, ["generate", "--model", str(folder), "--prompts", "a red circle", "--n", "2", "--steps", "2",
              "--out", str(out), "--quiet", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["image_count"] == 2 and summary["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert len(list(out.glob("0*.png"))) == 2


@pytest.mark.parametrize("method", ["ablate", "advunlearn"])
def test_every_method_refuses_a_transformer_family_in_one_line(transformer_family, method, tmp_path):
    family, folder = transformer_family
    out = tmp_path / "run"
    args = ["erase", "--concept", "circle", "--method", method, "--model", str(folder), "--out", str(out), "--quiet"]
    result = runner.invoke(app, args + (["--anchor", "shape"] if method == "ablate" else []))
    assert result.exit_code == 2, result.output
    kind = "sd3" if family.startswith("sd3") else "flux"
    message = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and f"not {kind}" in message[0] and "no erasure method supports" in message[0]
    assert not out.exists()


def test_evaluate_refuses_a_transformer_family_in_one_line(transformer_family, tmp_path):
    from erasectl.assets import embedded_judge_dir

    family, folder = transformer_family
    if family != "sd3":
        pytest.skip("one family is enough")
    out = tmp_path / "evaluation"
    result = runner.invoke(
        app, ["evaluate", "--model", str(folder), "--concept", "circle", "--surrounding", "ring,square",
              "--judge", str(embedded_judge_dir()), "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "evaluate supports SD 1.x, 2.x and SDXL models, not sd3 yet" in result.output
    assert not out.exists()
