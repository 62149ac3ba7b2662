"""Shared pytest fixtures: a fresh store per test and small real CSVs (tests/fixtures/).

Keep this file small; fixtures used by one test module belong in that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interestgeo.config import Config
from interestgeo.store import Store

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def default_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs on the default config: a developer's ./interestgeo.toml or $INTERESTGEO_CONFIG
    (e.g. another k_min_users or model_path) and $INTERESTGEO_DB must not change what it sees (a
    test that wants a config file points $INTERESTGEO_CONFIG at its own)."""
    empty = tmp_path_factory.getbasetemp() / "empty-config.toml"
    empty.touch()
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(empty))
    monkeypatch.delenv("INTERESTGEO_DB", raising=False)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def tmp_config(tmp_path: Path) -> Config:
    """The default config pointed at a database in the test's temporary folder."""
    return Config().with_db(tmp_path / "test.duckdb")


@pytest.fixture
def tmp_store(tmp_config: Config) -> Iterator[Store]:
    """An empty store (schema created) in a temporary file."""
    with Store.open(tmp_config.store.path, config=tmp_config) as store:
        yield store


@pytest.fixture
def demo_sample_csv() -> Path:
    """The first 300 check-ins of data/nyc_checkins.csv.gz (same columns), as plain CSV."""
    return FIXTURES / "nyc_sample.csv"


@pytest.fixture
def sample_store(tmp_store: Store, tmp_config: Config, demo_sample_csv: Path) -> Store:
    """A store holding demo_sample_csv as dataset "nyc-sample" (mapped like the demo)."""
    from interestgeo.ingest import ingest_file

    ingest_file(tmp_store, demo_sample_csv, config=tmp_config, dataset="nyc-sample")
    return tmp_store


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one torch thread avoids OpenMP oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
