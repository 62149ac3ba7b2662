"""cli/progress.py: the core's progress callbacks drawn as tqdm bars on stderr."""

from __future__ import annotations

import pytest

from interestgeo.cli.progress import Bars


def test_one_bar_per_step_on_stderr_and_none_when_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    with Bars(unit="batch") as bars:
        for done in (1, 2, 3):
            bars("epoch 1", done, 3, f"loss={done / 10:.3f}")
        bars("epoch 2", 1, 3, "")
        assert bars._bar.n == 1 and bars._bar.desc.startswith("epoch 2")
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1: 100%" in err and "3/3" in err and "loss=0.300" in err and "epoch 2" in err
    with Bars(enabled=False) as bars:
        bars("encoding texts", 1, 2, "")
    assert capsys.readouterr() == ("", "")
