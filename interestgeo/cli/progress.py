"""Progress bars on stderr for the core's `text.Progress` callbacks (the core never prints).

Why a class: the core reports `(what, done, total, detail)` for each step of a long run (texts
encoded, batches of an epoch); one tqdm bar per step, closed when the next step starts, keeps the
terminal as it was when the core drew its own bars.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["Bars"]


class Bars:
    """A `text.Progress` that draws a tqdm bar per step (`what`, counted in `unit`s); a new step
    closes the last bar."""

    def __init__(self, enabled: bool = True, unit: str = "it") -> None:
        self.enabled = enabled
        self.unit = unit
        self._bar: Any = None
        self._what: str | None = None

    def __call__(self, what: str, done: int, total: int, detail: str) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        if self._bar is None or what != self._what or total != self._bar.total:
            self.close()
            self._bar, self._what = tqdm(total=total, desc=what, unit=self.unit), what
        if detail:
            self._bar.set_postfix_str(detail, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
