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
