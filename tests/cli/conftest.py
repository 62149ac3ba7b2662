"""The CLI tests run on the default config: a developer's ./interestgeo.toml or $INTERESTGEO_CONFIG
(e.g. another k_min_users or model_path) and $INTERESTGEO_DB must not change what they see."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def default_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path_factory.getbasetemp() / "empty-config.toml"
    empty.touch()
    monkeypatch.setenv("INTERESTGEO_CONFIG", str(empty))
    monkeypatch.delenv("INTERESTGEO_DB", raising=False)

