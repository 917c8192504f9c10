import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache directory, so nothing reads or writes the user's ~/.cache/tunelens."""
    monkeypatch.setenv("TUNELENS_CACHE", str(tmp_path_factory.mktemp("cache")))
