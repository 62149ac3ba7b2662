"""What each score run leaves besides vectors: the run log (`score_runs`) and, per dataset, the
calibration the last calibrating run measured (`dataset_calibration`: the cutoff its world counts
stop at, the history weight chosen, the next-event MRR of the stored vectors against the history
baseline on held-out pairs; see vectors/refresh.py and calibration.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from interestgeo.store._db import finite_or_none
from interestgeo.store._part import StorePart

__all__ = ["RunsPart"]


class RunsPart(StorePart):
    """Score runs and dataset calibrations."""

    def record_score_run(
        self, source: str, since: datetime | None, events: int, users: int, elapsed_s: float
    ) -> int:
        """Log one `interestgeo score` run; returns its id."""
        self.ensure_analytics_schema()
        run_id = int(self._first_row("SELECT coalesce(max(run_id), 0) + 1 FROM score_runs")[0])
        self.con.execute(
            "INSERT INTO score_runs VALUES (?, ?, now(), ?, ?, ?, ?, ?)",
            [run_id, source, since, int(events), int(users), float(elapsed_s), float(events) / max(elapsed_s, 1e-9)],
        )
        return run_id

    def write_calibration(
        self, dataset_id: int, source: str, cutoff: datetime, history_weight: float, sharpness: float, pairs: int,
        stored_mrr: float | None, history_mrr: float | None, model_mrr: float | None, weights_json: str,
    ) -> None:
        """Record (replace) one dataset's calibration."""
        self.ensure_analytics_schema()
        self.con.execute("DELETE FROM dataset_calibration WHERE dataset_id = ?", [int(dataset_id)])
        self.con.execute(
            "INSERT INTO dataset_calibration VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [int(dataset_id), source, cutoff, float(history_weight), float(sharpness), int(pairs),
             finite_or_none(stored_mrr), finite_or_none(history_mrr), finite_or_none(model_mrr), weights_json],
        )

    def calibrations(self) -> pd.DataFrame:
        """Every dataset's calibration with its dataset name, by dataset id (empty before any)."""
        if not self._analytics_tables_exist() or not self._table_exists("dataset_calibration"):
            return pd.DataFrame(columns=["dataset_id", "name", "source", "cutoff", "history_weight", "sharpness", "pairs",
                                         "stored_mrr", "history_mrr", "model_mrr", "weights", "calibrated_at"])
        return self.con.execute(
            """SELECT c.dataset_id, d.name, c.source, c.cutoff, c.history_weight, c.sharpness, c.pairs, c.stored_mrr,
                      c.history_mrr, c.model_mrr, c.weights, c.calibrated_at
               FROM dataset_calibration c JOIN datasets d USING (dataset_id) ORDER BY c.dataset_id"""
        ).df()

    def calibration_cutoff(self, dataset_id: int) -> Any:
        """The stored cutoff (a UTC pd.Timestamp) of a dataset's world, or None before its first calibration."""
        if not self._analytics_tables_exist() or not self._table_exists("dataset_calibration"):
            return None
        row = self._first_row("SELECT epoch_us(cutoff) FROM dataset_calibration WHERE dataset_id = ?", [int(dataset_id)])
        return None if row is None else pd.Timestamp(int(row[0]), unit="us", tz="UTC")

    def score_runs(self) -> pd.DataFrame:
        """Every score run, newest first."""
        if not self._analytics_tables_exist():
            return pd.DataFrame()
        return self.con.execute("SELECT * FROM score_runs ORDER BY run_id DESC").df()

    def latest_score_source(self) -> str | None:
        """The vector source of the newest score run (None before the first): what an update must match.

        One value, not score_runs(): its pandas frame was ~5 ms of each dynamic update."""
        if not self._analytics_tables_exist():
            return None
        row = self._first_row("SELECT source FROM score_runs ORDER BY run_id DESC LIMIT 1")
        return None if row is None else str(row[0])
