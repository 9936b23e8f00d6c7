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


def _erase_circle(method: str, tmp_path_factory, **request):
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.models import load_pipeline
    from erasectl.world.profile import WorldProfile

    pipeline = load_pipeline()
    checkpoint = erase_concepts(pipeline, method, ErasureRequest(["circle"], WorldProfile(), **request), build_config(method, WorldProfile(), {}))
    path = checkpoint.save(tmp_path_factory.mktemp(f"circle-{method}") / "erased.safetensors")
    return pipeline, checkpoint, path


@pytest.fixture(scope="session")
def esd_circle(tmp_path_factory):
    """ESD with its defaults on "circle": (erased pipeline, checkpoint, checkpoint path)."""
    return _erase_circle("esd", tmp_path_factory)


@pytest.fixture(scope="session")
def ablate_circle(tmp_path_factory):
    """Concept Ablation with its defaults, "circle" onto "shape"."""
    return _erase_circle("ablate", tmp_path_factory, anchor="shape")
