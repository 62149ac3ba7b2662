"""The default text encoder, loaded once per module of tests/vectors/."""

from __future__ import annotations

import pytest

from interestgeo.config import Config
from interestgeo.text import TextEncoder, encoder_for


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return encoder_for(Config().text)
