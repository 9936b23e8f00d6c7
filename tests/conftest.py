import pytest


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's home, cache or hub; colours off for stable output."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="session")
def embedded_pipeline():
    from erasectl.models import load_pipeline

    return load_pipeline()


@pytest.fixture(scope="session")
def world_judge():
    from erasectl.judge import ClipJudge

    return ClipJudge.load()


def _erase_circle(method: str, tmp_path_factory, config: dict, **request):
    from erasectl.assets import EMBEDDED_NAME
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.models import load_pipeline
    from erasectl.world.profile import WorldProfile

    pipeline = load_pipeline()
    request = ErasureRequest(["circle"], WorldProfile(), model_name=EMBEDDED_NAME, **request)
    checkpoint = erase_concepts(pipeline, method, request, build_config(method, WorldProfile(), config))
    path = checkpoint.save(tmp_path_factory.mktemp(f"circle-{method}") / "erased.safetensors")
    return pipeline, checkpoint, path


@pytest.fixture(scope="session")
def uce_circle_checkpoint(tmp_path_factory):
    """UCE's defaults erasing "circle", through the CLI: the checkpoint file (read, never changed)."""
    from typer.testing import CliRunner

    from erasectl.cli import app

    out = tmp_path_factory.mktemp("uce-circle") / "run"
    result = CliRunner().invoke(app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


# Trained erasures here are short (their mechanisms are what tests check); what the defaults reach
# end to end is measured by benchmarks/erase_world.py against its goals.
@pytest.fixture(scope="session")
def esd_circle(tmp_path_factory):
    """ESD on "circle", 30 iterations: (erased pipeline, checkpoint, checkpoint path)."""
    return _erase_circle("esd", tmp_path_factory, {"steps": 30})


@pytest.fixture(scope="session")
def ablate_circle(tmp_path_factory):
    """Concept Ablation, "circle" onto "shape", 30 iterations on 16 anchor images."""
    return _erase_circle("ablate", tmp_path_factory, {"steps": 30, "anchor_images": 16}, anchor="shape")


def pytest_configure(config):
    """Under pytest-xdist each worker is a process of its own: one torch thread each, so that two
    workers share two cores rather than each fighting for both."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
