"""The one typed configuration of interestgeo.

Every knob lives here, in frozen dataclasses with a reason beside each field, so that the CLI,
the dashboard, checkpoints and run records all speak of the same thing. The CLI builds a
`Config` (optionally from a TOML file), checkpoints store `to_dict()` beside their weights, and
no module reads settings from globals or string-keyed dicts.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Config",
    "StoreConfig",
    "TextConfig",
    "ModelConfig",
    "PrivacyConfig",
    "AppConfig",
    "AnalyticsConfig",
    "ForecastConfig",
    "DEFAULT_DB_PATH",
    "load_config",
]

DEFAULT_DB_PATH = Path("data/interestgeo.duckdb")


@dataclass(frozen=True)
class StoreConfig:
    # One DuckDB file holds events, datasets, rejects, aggregates, embeddings and checkpoints.
    path: Path = DEFAULT_DB_PATH
    # H3 resolution stored per event. 10 (edge ~66 m, ~15,000 m2) separates venues on one block,
    # which the model needs; every coarser parent is derivable from it with bit operations.
    base_resolution: int = 10
    # Resolutions the cell x window aggregates are kept at: 6 (~36 km2, a borough slice) to
    # 9 (~0.1 km2, a few blocks). The map picks one of these from the visible area.
    map_resolutions: tuple[int, ...] = (6, 7, 8, 9)
    # Of those, the resolutions whose hour windows are precomputed. Finer hour windows are sparse
    # (at res 8-9 most hour x cell groups hold one event, at 7 a third of the events are alone in
    # theirs: together more rows than the file has events, most of the ingest's aggregate work);
    # their maps are counted from the events (one hour window: ~10 ms on 2M events).
    hour_resolutions: tuple[int, ...] = (6,)
    # Window sizes aggregated; windows are in the event's local time (see schema.py).
    windows: tuple[str, ...] = ("hour", "day", "week")
    # A file larger than this is refused before reading (uploads are also capped by Streamlit).
    max_file_bytes: int = 2 * 1024**3
    # DuckDB threads; None lets DuckDB use every core.
    threads: int | None = None
    # DuckDB's memory limit per process, MB (None: DuckDB's default, 80 % of RAM). Beyond it DuckDB
    # writes to disk: inserting 400k 512-d vectors in one transaction held 2.9 GB without it, 1.2 GB at 1 GB.
    memory_limit_mb: int | None = 2048
    # How long a reader (a dashboard query) waits for a writer's commit before saying "reload in a
    # moment": short, as a person is looking at the page (see store/file_access.py).
    read_wait_s: float = 3.0
    # How long a writer (ingest, score, an upload) waits for another write or for readers'
    # queries before giving up with one sentence; a second load waits for the first this long.
    write_wait_s: float = 600.0


@dataclass(frozen=True)
class TextConfig:
    # The packaged encoder: "use-multilingual-v3" (16 languages, 512-d; chosen by
    # benchmarks/bench_text.py) or "all-MiniLM-L6-v2" (English, 384-d). See text.py.
    encoder: str = "use-multilingual-v3"
    # A local transformers model folder; when set it is the encoder (its folder name is the model id).
    model_path: Path | None = None
    # BLAS threads of the multilingual encoder: on the shared 2 cores one thread was faster than two.
    threads: int = 1
    # Where the packaged model's zip is extracted once.
    cache_dir: Path = Path(".cache/interestgeo")
    # Texts per forward pass of a transformers encoder: 64 keeps MiniLM fast on 2 CPU cores without large padding waste.
    batch_size: int = 64
    # Event texts are short (a venue name and category); longer input is truncated.
    max_length: int = 64
    # Warn when more than this share of a text's word pieces are the unknown token.
    unknown_token_warn_share: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    # --- interest model ---
    # Seed for torch, numpy and batch order: same seed, same checkpoint, same numbers.
    seed: int = 0
    # Events of history the Transformer reads; 128 covers the whole history of most NYC users (~105 events).
    max_len: int = 128
    # Transformer width: small enough to train in minutes on 2 CPU cores, wide enough for ~5k venues.
    n_embd: int = 128
    # Self-attention layers: two keep an epoch near 1.5 min on 2 CPU cores (depth was not tuned).
    n_layer: int = 2
    # Attention heads per layer (head size 32).
    n_head: int = 4
    # Dropout in embeddings, attention and MLP: the data is small (~90k training events).
    dropout: float = 0.2
    # H3 resolutions with learned cell embeddings, summed (e.g. (10, 9, 8, 7)). Empty by default:
    # learned cells tie a checkpoint to the places it was trained on; the inductive model reads
    # places through distances and counts computed from the scored data instead.
    cell_resolutions: tuple[int, ...] = ()
    # Fourier frequencies per coordinate of the offset from the data's centre. 0 by default: what a
    # learned function of absolute position means in one city is noise in another.
    fourier_freqs: int = 0
    # Feed the event's text embedding (projected) into the Transformer and represent venues by it.
    use_text: bool = True
    # Feed H3 cells, coordinates, local time, gaps and distances; also the distance-to-candidate logit.
    use_spacetime: bool = True
    # Learned per-venue id embedding (input) and id offset in the text space (output): ties the
    # checkpoint to its training venues (ablations only; the product's model is inductive).
    use_item_id: bool = False
    # Repeat/explore: pointer over the user's own past venues + history-count and transition logits.
    use_copy: bool = True
    # Give the model the next event's local time (hour, weekday, gap) at the query position.
    use_target_time: bool = True
    # Sharpness of the "visits at a similar hour to the next event" logit (exp(k*(cos dh - 1))); 0 = off.
    hour_kernel: float = 4.0
    # During training, hide the next event's time this often, so one model serves both variants.
    target_time_dropout: float = 0.25
    # Weight of the next-category cross-entropy beside the next-venue loss.
    category_loss_weight: float = 0.2
    # AdamW learning rate, constant (no warm-up): the best validation MRR on NYC comes at epoch 4-5.
    learning_rate: float = 2e-3
    # Learning rate when adapting a trained model to one dataset (`train --from`): half the
    # from-scratch rate, so a few epochs adjust the weights rather than relearn them.
    finetune_learning_rate: float = 1e-3
    # AdamW weight decay on matrices (not on biases, norms or embeddings of rare ids).
    weight_decay: float = 0.01
    # Training windows per optimizer step (x max_len positions).
    batch_size: int = 32
    # Upper bound on epochs (~2 min each on 2 busy cores keeps training under 15 min); early stopping may end sooner.
    epochs: int = 8
    # Stop after this many epochs without a better validation MRR (the best epoch is kept).
    patience: int = 2
    # Scoring batch size for evaluation and interest vectors.
    eval_batch_size: int = 256
    # Torch CPU threads for training; on 2 shared cores one thread avoided OpenMP oversubscription
    # stalls (1.5 s vs 3-4 s per step under load). None leaves torch's default.
    threads: int | None = 1
    # Scoring (stored vectors only; training and evaluation stay float32): the trunk and the
    # (rows x venues) logits product in bfloat16 with float32 accumulation, softmax and
    # expectation in float32 (~2x faster matrix products on AVX512-BF16 CPUs; effect on the
    # vectors and MRR measured in README "Scale").
    score_bfloat16: bool = True
    # Scoring: rows of context each scored event has at least in its window (or its whole history
    # before it); None (or more than max_len // 2): max_len // 2, as training's windows. Less
    # context, fewer overlapping windows through the trunk (an event passes it 1.40 times on the
    # demo at 64, 1.15 at 32); next-event MRR held at 32 (README "Scale").
    score_context: int | None = 32
    # Checkpoint folder (safetensors + JSON, registered in the store); None: `models/` beside the database.
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class PrivacyConfig:
    # Region aggregates hide any cell x window with fewer distinct users than this.
    k_min_users: int = 10


@dataclass(frozen=True)
class AppConfig:
    # "analyst" sees per-user pages; "marketer" sees aggregates only. None: the dashboard picks
    # "analyst" while it listens on localhost only and "marketer" otherwise (accounts, when any
    # exist, override this per person); the CLI, run by whoever holds the database, is "analyst".
    role: str | None = None
    # None renders maps with no basemap (works offline); a style URL turns a basemap on.
    map_style: str | None = None
    # While the server is idle after the first visit, load what the next pages need beyond the stored
    # aggregates (the change-point solver, the scored events; pages/_ui/warmup.py): they then wait less.
    warm_up: bool = True
    # A store of more events than this is "large": no warm-up, and views that read every event
    # (forecasts) run when asked, not on every visit. Its questions of everyone come from the stored
    # aggregates; holding every event's row (the demo x10: 1.1M rows, 0.9 GB to read) is not worth it up front.
    large_store_events: int = 1_000_000


@dataclass(frozen=True)
class AnalyticsConfig:
    # --- interest analytics ---
    # Phrases that replace the data-derived topics (e.g. ["late-night food", "jazz"]); empty = derive.
    topic_phrases: tuple[str, ...] = ()
    # Topics come from category paths only when at least this share of events has one; else clusters.
    category_path_min_share: float = 0.5
    # k-means topics when there are no category paths: ~12 fit a legend and stay distinguishable.
    topic_clusters: int = 12
    # Softmax temperature turning cosine similarities to topics into shares (lower = sharper).
    topic_temperature: float = 0.05
    # Window sizes whose user and cell interest vectors `score` stores (day/hour are computed on the fly).
    stored_windows: tuple[str, ...] = ("week",)
    # H3 resolutions whose cell x window interest vectors `score` stores (the map's resolutions).
    stored_resolutions: tuple[int, ...] = (6, 7, 8, 9)
    # A user counts as strongly interested in a phrase when their affinity is in this top quantile.
    strong_interest_quantile: float = 0.9
    # Change points (ruptures' PELT on the topic-share series): the penalty per change, in units of a
    # BIC penalty (topics x log(windows) on shares scaled by their robust window-to-window noise).
    # 1 is BIC; higher finds fewer, larger shifts.
    change_point_penalty: float = 2.0
    # Windows with fewer people than this share of the median window are gaps for change points, not
    # data: a week with 16 people beside weeks of 300 has shares that jump by sampling alone.
    thin_window_share: float = 0.25
    # Explanations look at this many most recent events (occlusion costs one window forward per event;
    # 32 keeps an explanation near 1 s on 2 busy cores).
    explain_max_events: int = 32
    # Next venues near a given place: candidates within this radius of it.
    next_radius_km: float = 2.0
    # Share of the user's recent history in the stored interest vector (0 = the model's vector alone;
    # its text-space vector covers exploring, returns go through its pointer over the history).
    # None: each full score picks it from 0, .25, .5, .75, 1 by how well vectors rank the next event.
    history_weight: float | None = None
    # Half-life of an event in that history mean (and in the no-model `--source recency` vectors).
    history_half_life_days: float = 7.0
    # Processes `interestgeo score` runs its chunks of users in (local engine). None: one per CPU core
    # when a run has at least 4 chunks (a process costs ~3 s to start); 1: in the calling process.
    score_workers: int | None = None
    # Region answers hold the per-event interest vectors in memory up to this size (the NYC demo's
    # 113k x 512 floats: 231 MB); beyond it they stay in the store and each question is answered
    # there (DuckDB dot products, one streamed pass for group means): bounded memory at any size.
    max_vector_memory_mb: int = 1024


@dataclass(frozen=True)
class ForecastConfig:
    # --- topic-share forecasts (forecast.py) ---
    # Windows ahead to forecast when the caller does not say.
    horizon: int = 4
    # A region is forecast only with at least this many windows of >= k people (the backtest and the
    # pooled fit need a history; fewer and the region says so and is skipped).
    min_windows: int = 8
    # ... and only when one of its last this many windows had >= k people (else the forecast would
    # start from a stale share).
    max_stale_windows: int = 4
    # Rolling-origin backtest: forecasts are made at each of the last this many windows (and scored
    # on the windows after them).
    backtest_origins: int = 8
    # A topic "rises" when its share gains at least this much (0.02 = 2 percentage points) between
    # the last observed window and the forecast one.
    rise_threshold: float = 0.02
    # Half-life, in windows, of the exponentially weighted share level (pandas ewm).
    halflife_windows: float = 3.0
    # The trend forecaster fits a straight line to this many last windows (gaps left out).
    trend_windows: int = 8
    # Windows in the moving-average baseline (per window kind).
    moving_average_weeks: int = 4
    moving_average_days: int = 7
    # Coverage of the forecast interval (empirical, from the pooled fit's scaled residuals).
    interval: float = 0.8
    # H3 resolution of the cells forecast as regions (6: ~36 km2, a borough slice).
    cell_resolution: int = 6


@dataclass(frozen=True)
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    app: AppConfig = field(default_factory=AppConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings), stored beside checkpoints and run records."""
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass silently."""
        return _build(cls, data)

    def with_db(self, path: Path | str) -> Config:
        """The same config pointed at another database file."""
        return dataclasses.replace(self, store=dataclasses.replace(self.store, path=Path(path)))


def load_config(path: Path | str | None = None) -> Config:
    """Read a TOML config (sections `store`, `text`, `model`, `privacy`, `app`).

    With no path, `$INTERESTGEO_CONFIG` is used if set, else `interestgeo.toml` in the working
    directory if present, else the defaults. `$INTERESTGEO_DB` overrides the database path.
    """
    if path is None:
        env = os.environ.get("INTERESTGEO_CONFIG")
        path = Path(env) if env else (Path("interestgeo.toml") if Path("interestgeo.toml").exists() else None)
    config = Config()
    if path is not None:
        with open(path, "rb") as f:
            config = Config.from_dict(tomllib.load(f))
    db = os.environ.get("INTERESTGEO_DB")
    return config.with_db(db) if db else config


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current):
            kwargs[name] = _build(type(current), value)
        elif isinstance(current, Path) or (current is None and name.endswith(("path", "_dir"))):
            kwargs[name] = None if value is None else Path(value)
        elif isinstance(current, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
