"""Space-time encodings of events: where (H3 cells, coordinates) and when (local time, gaps).

Why a module of its own: the same features feed training, scoring and the dashboard's
"how much did time and place change the interest" view, so they are computed in one place.
Pure numpy functions turn an events frame into per-event arrays (`event_features`,
`CellVocab.lookup`); `SpaceTimeEncoder` turns those arrays into one vector per event.

Cells: learned embeddings at the base resolution and at coarser parents, summed, so a cell seen
twice in training still gets a useful vector from its neighbourhood. The vocabulary is built from
training events only; unseen cells map to index 0 (a shared "unknown" row) at that resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from interestgeo.cells import cell_to_parent
from interestgeo.config import ModelConfig
from interestgeo.geo import KM_PER_DEG_LAT, haversine_km
from interestgeo.schema import user_keys

__all__ = [
    "CellVocab",
    "EventFeatures",
    "SpaceTimeEncoder",
    "cyclic_time",
    "event_features",
    "fourier_features",
]

# Continuous per-event features fed to the encoder (besides cells): see `EventFeatures.cont`.
N_TIME_FEATURES = 6  # sin/cos hour, sin/cos weekday, sin/cos hour-of-week
N_CONT_FEATURES = N_TIME_FEATURES + 2  # + log gap since previous, log distance from previous


@dataclass
class CellVocab:
    """Sorted known cells per resolution; index i+1 is cell i, 0 is unknown."""

    resolutions: tuple[int, ...]
    cells: list[np.ndarray]  # one sorted int64 array per resolution

    @classmethod
    def build(cls, base_cells: np.ndarray, resolutions: tuple[int, ...], min_count: int = 1) -> CellVocab:
        """Vocabulary from training cells; cells seen fewer than `min_count` times stay unknown."""
        known = []
        for res in resolutions:
            parents = cell_to_parent(base_cells, res)
            values, counts = np.unique(parents, return_counts=True)
            known.append(values[counts >= min_count])
        return cls(tuple(resolutions), known)

    def sizes(self) -> list[int]:
        return [len(c) + 1 for c in self.cells]

    def lookup(self, base_cells: np.ndarray) -> np.ndarray:
        """(N, R) int64 indices into each resolution's embedding table (0 = unknown)."""
        out = np.zeros((len(base_cells), len(self.resolutions)), dtype=np.int64)
        for j, (res, known) in enumerate(zip(self.resolutions, self.cells)):
            parents = cell_to_parent(base_cells, res)
            pos = np.searchsorted(known, parents)
            pos_c = np.minimum(pos, max(len(known) - 1, 0))
            hit = (len(known) > 0) & (known[pos_c] == parents) if len(known) else np.zeros(len(parents), bool)
            out[:, j] = np.where(hit, pos_c + 1, 0)
        return out


def cyclic_time(local_hour: np.ndarray, dow: np.ndarray) -> np.ndarray:
    """(N, 6) float32: sin/cos of the hour of day, the weekday and the hour of the week.

    `local_hour` may be fractional (hour + minutes/60). Cyclic so 23:50 sits next to 00:10.
    """
    h = np.asarray(local_hour, dtype=np.float64)
    d = np.asarray(dow, dtype=np.float64)
    week = (d * 24 + h) / (7 * 24)
    ang = np.stack([h / 24, d / 7, week], axis=1) * 2 * math.pi  # (N, 3)
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)


def fourier_features(lat: torch.Tensor, lon: torch.Tensor, n_freqs: int, centre: tuple[float, float]) -> torch.Tensor:
    """(..., 4 * n_freqs) sin/cos of coordinates at geometric scales from ~0.2 km to ~50 km.

    Coordinates are first turned into km offsets from `centre` (the training data's mean).
    """
    y = (lat - centre[0]) * KM_PER_DEG_LAT
    x = (lon - centre[1]) * KM_PER_DEG_LAT * math.cos(math.radians(centre[0]))
    scales = torch.logspace(math.log10(0.2), math.log10(50.0), n_freqs, dtype=lat.dtype, device=lat.device)
    xy = torch.stack([x, y], dim=-1).unsqueeze(-1) / scales * 2 * math.pi  # (..., 2, F)
    return torch.cat([torch.sin(xy), torch.cos(xy)], dim=-1).flatten(-2)  # (..., 4F)


@dataclass
class EventFeatures:
    """Per-event arrays in frame order (one row per event), ready to be windowed into tensors."""

    cont: np.ndarray  # (N, 8) float32: cyclic time (6), log1p gap hours, log1p distance km from previous
    lat: np.ndarray  # (N,) float64
    lon: np.ndarray  # (N,) float64
    gap_hours: np.ndarray  # (N,) float32 hours since the user's previous event (0 for the first)


def event_features(events: pd.DataFrame) -> EventFeatures:
    """Continuous space-time features of each event; gaps and distances look at the same user's previous event.

    `events` is in store.events() order (sorted by user, then time), so "previous" is the row above
    when it belongs to the same (dataset_id, user_id).
    """
    n = len(events)
    local = pd.to_datetime(events["local_ts"])
    hour = local.dt.hour.to_numpy() + local.dt.minute.to_numpy() / 60.0
    dow = local.dt.day_of_week.to_numpy()
    lat = events["lat"].to_numpy(dtype=np.float64)
    lon = events["lon"].to_numpy(dtype=np.float64)
    # seconds since the epoch; via datetime64[ns] explicitly, whatever unit the frame's column uses
    ts = pd.to_datetime(events["ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64) / 1e9
    user = user_keys(events).to_numpy()
    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = user[1:] == user[:-1]
    gap = np.zeros(n, dtype=np.float64)
    dist = np.zeros(n, dtype=np.float64)
    if n > 1:
        gap[1:] = np.where(same[1:], (ts[1:] - ts[:-1]) / 3600.0, 0.0)
        dist[1:] = np.where(same[1:], haversine_km(lat[:-1], lon[:-1], lat[1:], lon[1:]), 0.0)
    gap = np.clip(gap, 0.0, None)
    cont = np.concatenate(
        [cyclic_time(hour, dow), np.log1p(gap)[:, None], np.log1p(dist)[:, None]], axis=1
    ).astype(np.float32)
    return EventFeatures(cont=cont, lat=lat, lon=lon, gap_hours=gap.astype(np.float32))


class SpaceTimeEncoder(nn.Module):
    """Cells (summed embeddings over resolutions) + Fourier coordinates + time/gap features -> (B, T, C)."""

    def __init__(self, config: ModelConfig, cell_sizes: list[int], centre: tuple[float, float]) -> None:
        super().__init__()
        self.config = config
        self.centre = centre
        self.cells = nn.ModuleList([nn.Embedding(n, config.n_embd) for n in cell_sizes])
        n_in = 4 * config.fourier_freqs + N_CONT_FEATURES
        self.proj = nn.Sequential(nn.Linear(n_in, config.n_embd), nn.GELU(), nn.Linear(config.n_embd, config.n_embd))

    def forward(self, cells: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        # cells (B, T, R) int64, lat/lon (B, T) float, cont (B, T, 8) float
        x = sum(emb(cells[..., j]) for j, emb in enumerate(self.cells))  # (B, T, C)
        four = fourier_features(lat, lon, self.config.fourier_freqs, self.centre)  # (B, T, 4F)
        return x + self.proj(torch.cat([four, cont], dim=-1))  # (B, T, C)
