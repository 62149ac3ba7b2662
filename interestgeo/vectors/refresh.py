"""Scoring a store: full runs, dynamic updates and per-dataset adaptation.

A full run (`score_store`) calibrates each dataset's blend, chooses the topics, scores chunks of
whole users with an engine and writes vectors, aggregates, topics and calibrations in one short
transaction. A dynamic update (`since=`, or new events without vectors) runs only the affected
users' histories forward (whole histories: a user's vector depends on everything before it),
rewrites only their events from the first affected one on (the model is causal, so earlier
vectors cannot change) and only the affected windows of the aggregates. The result equals a full
re-score (tests/vectors/test_refresh.py proves it); the model's weights stay fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.analytics import Filters, ScoredEvents, aggregate_cell_windows, aggregate_user_windows
from interestgeo.calibration import SHARPNESS, Calibration, calibrate, calibration_cutoff, next_event_pairs
from interestgeo.calibration import unit as _unit
from interestgeo.config import Config
from interestgeo.store.compact import CompactVectors
from interestgeo.topics import Topics, derive_topics, topic_similarities, topics_from_phrases
from interestgeo.vectors.chunks import (
    ChunkRunner,
    TextTable,
    _chunk_bounds,
    _default_runner,
    _new_user,
    chunk_state,
    local_chunks,
    offline_source,
    score_chunk,
    stored_aggregates,
)
from interestgeo.vectors.span import span_change, span_rows_stored, update_span_aggregates
from interestgeo.vectors.sources import BlendedSource, VectorSource, _text_vectors_fn, load_source, source_label
from interestgeo.vectors.staging import (
    EventsSnapshot,
    _cell_window_columns,
    _Staging,
    _user_window_columns,
    stage_chunk,
)
from interestgeo.windows import SPAN_WINDOWS, window_floor

if TYPE_CHECKING:
    from interestgeo.store import Store


@dataclass
class ScoreReport:
    """What one `interestgeo score` run did."""

    source: str
    mode: str  # "full" or "update"
    events: int  # events whose vectors were (re)written
    users: int  # users whose histories were run forward
    history_events: int  # events run through the model (the affected users' whole histories)
    elapsed_s: float
    topics: int
    topics_source: str
    since: str | None
    # per dataset (name): the blend chosen and how the stored vectors anticipate next events there
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.history_events / max(self.elapsed_s, 1e-9)

    @property
    def seconds_per_1000(self) -> float:
        """Wall time per 1,000 (re)scored events (the dynamic-update figure)."""
        return 1000.0 * self.elapsed_s / max(self.events, 1)

    def quality_lines(self) -> list[str]:
        """One sentence per calibrated dataset (calibration.Calibration.sentence)."""
        return [c.sentence(name) for name, c in self.calibrations.items()]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["calibrations"] = {name: {**c.to_dict(), "sentence": c.sentence(name)} for name, c in self.calibrations.items()}
        out["events_per_s"] = self.events_per_s
        out["seconds_per_1000"] = self.seconds_per_1000
        return out


def _topics(
    stored: Topics | None, config: Config, text_vectors: Callable[[list[str]], np.ndarray],
    texts: Callable[[], pd.DataFrame],
) -> tuple[Topics, bool]:
    """The `stored` topics (None: missing or to refresh) unless the configured phrases changed; and
    whether they are new (the caller writes new ones in its transaction). `texts()`: the events'
    text and category_path in store.events() order, read only when topics are derived."""
    phrases = tuple(config.analytics.topic_phrases)
    if stored is not None and (not phrases or (stored.source == "phrases" and stored.labels == phrases)):
        return stored, False
    if phrases:
        topics = topics_from_phrases(phrases, text_vectors(list(phrases)))
    else:
        distinct = texts().drop_duplicates("text")
        topics = derive_topics(
            distinct["text"].tolist(),
            text_vectors(distinct["text"].tolist()),
            distinct["category_path"].tolist() if "category_path" in distinct else None,
            min_path_share=config.analytics.category_path_min_share,
            clusters=config.analytics.topic_clusters,
            seed=config.model.seed,
        )
    return topics, True


def _write_aggregates(
    store: Store, config: Config, scored: ScoredEvents, datasets: list[int], from_day: dict[int, np.datetime64] | None,
    span: bool = True,
) -> None:
    """(Re)write the stored aggregates (`stored_aggregates`) of `datasets` from a local day on:
    dated windows from the window holding that day, whole-span ones (unless not `span`) entirely."""
    for dataset_id in datasets:
        start = None if from_day is None else from_day[dataset_id]
        for window, resolutions, with_users in stored_aggregates(config):
            if window in SPAN_WINDOWS and not span:
                continue
            # windows overlapping the start day are recomputed whole: start from the window's start
            window_from = None if start is None or window in SPAN_WINDOWS else window_floor(start, window)
            filters = Filters(
                datasets=(dataset_id,),
                date_from=None if window_from is None else pd.Timestamp(window_from).date(),
            )
            if with_users:
                frame, vectors = aggregate_user_windows(scored, filters, window)
                store.replace_window_vectors(
                    "user_window_vectors", window, _user_window_columns(frame, dataset_id, window), vectors,
                    datasets=[dataset_id], from_start=window_from,
                )
            # every resolution's cells in one replace (one DELETE + INSERT instead of one per resolution)
            parts = [(r, *aggregate_cell_windows(scored, filters, r, window)) for r in resolutions]
            filled = [part for part in parts if len(part[1])] or parts[:1]
            cells = pd.concat([f for _, f, _, _ in filled], ignore_index=True)
            cell_vectors = np.concatenate([v for _, _, v, _ in filled])
            cell_shares = np.concatenate([t for _, _, _, t in filled])
            cells = cells.assign(
                dataset_id=dataset_id,
                resolution=np.repeat(np.array([r for r, *_ in filled], dtype=np.int8), [len(f) for _, f, _, _ in filled]),
            )
            columns = _cell_window_columns(cells, window)
            store.replace_window_vectors(
                "cell_window_vectors", window, columns, cell_vectors,
                datasets=[dataset_id], from_start=window_from, resolution=list(resolutions), shares=cell_shares,
            )


def score_store(
    store: Store,
    config: Config,
    *,
    source: VectorSource | None = None,
    encoder: Any | None = None,
    datasets: list[int] | None = None,
    since: datetime | str | None = None,
    update: bool = False,
    refresh_topics: bool = False,
    progress: Callable[[float, str], None] | None = None,
    runner: ChunkRunner | None = None,
) -> ScoreReport:
    """Score the store's events and store vectors, topics and window aggregates.

    Full (default): every event of `datasets` (all when None). Update (`update=True` or a `since`
    time): only users with unscored events or events at/after `since`, from their first such event
    on. `source` defaults to the latest trained checkpoint; `encoder` (a TextEncoder) to the
    configured one. Raises LookupError with a one-line message when there is nothing to score with.

    A full run scores chunks of whole users (`score_chunk`) with `runner` (default `local_chunks`;
    another engine gets a detached, picklable state), stages their results as Parquet beside the
    database and writes everything in one short transaction at the end.
    """
    started = time.perf_counter()
    if encoder is None:
        from interestgeo.text import encoder_for

        encoder = encoder_for(config.text)
    if source is None:
        source = load_source(store, config, encoder=encoder)
    text_vectors = _text_vectors_fn(store, encoder)
    store.ensure_analytics_schema()
    since_ts = None if since is None else pd.Timestamp(since)
    if since_ts is not None and since_ts.tzinfo is None:
        since_ts = since_ts.tz_localize("UTC")
    if update or since_ts is not None:
        previous = store.latest_score_source()
        if previous is not None and previous != source_label(source):
            raise LookupError(
                f"stored vectors come from {previous!r}, not {source_label(source)!r}: "
                "run a full `interestgeo score` instead of an update"
            )
        topics = store.analytics_topics() if previous is not None else None
        if topics is not None:
            return _score_update(store, config, source, text_vectors, topics, since_ts, started, progress)
    # a full run: read (seconds), compute with the store closed (minutes), write (one transaction)
    with _Staging(store.path) as staging:
        snapshot = staging.snapshot(store, datasets)
        if snapshot.rows == 0:
            raise LookupError("no events to score: ingest a CSV first (`interestgeo ingest FILE`)")
        keys = snapshot.columns(["dataset_id", "user_id"])  # (N,) narrow: chunk bounds, dataset slices
        dataset_ids = sorted(int(d) for d in keys["dataset_id"].unique())
        table = _text_table(store, config, text_vectors, snapshot, dataset_ids, worlds=isinstance(source, BlendedSource))
        stored_topics = None if refresh_topics else store.analytics_topics()
        offline = offline_source(source, table)
        was_read_only = store.read_only
        if offline is not None:
            store.close()  # while the chunks compute the file is nobody's: the dashboard reads, a load writes
        try:
            calibrations, topics, topics_fresh, users, cell_files = _compute_full(
                store, config, offline or source, table, snapshot, keys, dataset_ids, stored_topics, staging,
                runner, progress,
            )
        except Exception:
            if offline is not None:  # the caller's store as it came (after a Ctrl-C it stays closed: the run ends)
                store.reopen(read_only=was_read_only)
            raise
        if offline is not None or store.read_only:
            store.reopen(read_only=False)  # waits for a load that is writing now
        # what changed meanwhile: a dataset deleted gets nothing back; events loaded into a
        # dataset meanwhile stay unscored (`interestgeo score --since new` scores them)
        present = set(store.datasets()["dataset_id"].astype(int))
        kept = [d for d in dataset_ids if d in present]
        # one short transaction: what the chunks staged goes in at once (all or nothing)
        with store.transaction():
            if topics_fresh:
                store.write_topics(topics.labels, topics.source, topics.vectors)
            store.delete_event_vectors(kept)
            events = store.insert_staged("event_vectors", staging.files("event_vectors"), datasets=kept)
            for window, resolutions, with_users in stored_aggregates(config):
                if with_users:
                    store.replace_window_vectors("user_window_vectors", window, {}, np.zeros((0, 0)), datasets=kept)
                store.replace_window_vectors("cell_window_vectors", window, {}, np.zeros((0, 0)), datasets=kept,
                                             resolution=list(resolutions))
            for window, _, with_users in stored_aggregates(config):
                if with_users:
                    store.insert_staged("user_window_vectors", staging.files("user_window_vectors"), window,
                                        datasets=kept)
            store.insert_staged("cell_window_vectors", cell_files, datasets=kept)
            calibrations = {d: c for d, c in calibrations.items() if d in present}
            _write_calibrations(store, source, calibrations.values())
            elapsed = time.perf_counter() - started
            store.record_score_run(source_label(source), None, events, users, elapsed)
    return ScoreReport(
        source_label(source), "full", events, users, events, elapsed,
        len(topics), topics.source, None, _by_name(store, calibrations),
    )


def _text_table(
    store: Store, config: Config, text_vectors: Callable[[list[str]], np.ndarray], snapshot: EventsSnapshot,
    datasets: list[int], *, worlds: bool,
) -> TextTable:
    """Every text a full run can embed, embedded now while the store is open (new ones are cached
    in it when it is open for writing): the events' texts, the configured topic phrases and, for a
    model's `worlds`, the events' categories."""
    from interestgeo.split import NO_CATEGORY

    categories = snapshot.columns(["category"])["category"].dropna().unique().tolist() if worlds else []
    texts = list(dict.fromkeys([
        *store.distinct_texts(datasets), *config.analytics.topic_phrases,
        *([*map(str, categories), NO_CATEGORY] if worlds else []),
    ]))
    return TextTable(texts, text_vectors(texts))


def _compute_full(
    store: Store, config: Config, source: VectorSource, table: TextTable, snapshot: EventsSnapshot,
    keys: pd.DataFrame, dataset_ids: list[int], stored_topics: Topics | None, staging: _Staging,
    runner: ChunkRunner | None, progress: Callable[[float, str], None] | None,
) -> tuple[dict[int, Calibration], Topics, bool, int, list[str]]:
    """A full run's compute phase (the store closed unless `source` needs it): calibrate each
    dataset, choose the topics, score the snapshot's chunks into `staging` and merge their cell
    sums. Returns (calibrations, topics, whether they are new, users, merged cell files)."""
    calibrations: dict[int, Calibration] = {}
    if isinstance(source, BlendedSource):
        for dataset_id, rows in _dataset_slices(keys):  # one dataset's events at a time
            calibrations[dataset_id] = calibrate_source(
                source, snapshot.events(rows.start, rows.stop), dataset_id, table, config)
    topics, topics_fresh = _topics(stored_topics, config, table, lambda: snapshot.columns(["text", "category_path"]))
    bounds = _chunk_bounds(keys)
    users = int(_new_user(keys).sum())
    # the default engine's workers stage their own results (staging.stage_chunk) and hand back file names
    runner = runner or _default_runner(config, len(bounds) - 1, partial(stage_chunk, str(staging.folder)))
    try:
        state = chunk_state(store, config, source, topics, dataset_ids, table, detach=runner is not None, table=table)
    except TypeError:  # a source that cannot leave this process (a caller's own): score here
        runner, state = None, chunk_state(store, config, source, topics, dataset_ids, table)
    chunks = (snapshot.events(a, b) for a, b in zip(bounds[:-1], bounds[1:]))  # one chunk read at a time
    for result in (runner or local_chunks)(state, chunks):
        staging.add(result)
        if progress is not None:
            progress(staging.events / snapshot.rows, f"{staging.events:,} of {snapshot.rows:,} events")
    if staging.events != snapshot.rows:
        raise RuntimeError(f"the scoring engine returned {staging.events:,} of {snapshot.rows:,} events")
    return calibrations, topics, topics_fresh, users, staging.merged_cells(len(topics))


def _dataset_slices(events: pd.DataFrame) -> list[tuple[int, slice]]:
    """(dataset id, its rows) of events sorted by dataset first (store.events() order)."""
    ds = events["dataset_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
    return [(int(ds[a]), slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]


# Events of the pair owners' histories the calibration runs the model over at once.
_CALIBRATION_EVENTS = 100_000


def calibrate_source(
    source: BlendedSource, events: pd.DataFrame, dataset_id: int, text_vectors: Callable[[list[str]], np.ndarray],
    config: Config,
) -> Calibration:
    """One dataset's calibration, set on `source`: its world's counts stop at the cutoff of its
    most recent tenth, where the history weight (and the model's sharpness) are chosen and the
    quality figure measured. The model runs over the few windows holding the measured pairs
    (every sharpness at once); the chunks then score everything with the chosen values."""
    cutoff = calibration_cutoff(events["ts"])
    source.use_cutoffs({dataset_id: cutoff})
    source.use_events(dataset_id, events)
    measured = next_event_pairs(events, cutoff)
    pairs = measured[0]
    needed = np.zeros(len(events), dtype=bool)
    needed[pairs] = True
    sharpness = getattr(source.model, "sharpness", None)
    options = SHARPNESS if sharpness is not None else (1.0,)
    # the model and the history run over the histories of the users owning a pair only (a few
    # thousand users at most, however big the dataset); the MRR candidates stay all the texts
    # in groups of owners of about _CALIBRATION_EVENTS events: the model's output holds every row of
    # its input for each sharpness (at 5M events one call peaked at 15.7 GB)
    owner = np.cumsum(_new_user(events))  # (N,) user number of each row
    owners = np.unique(owner[needed])
    sizes = np.bincount(owner)[owners]
    group = np.cumsum(sizes) // _CALIBRATION_EVENTS
    models, histories = [], []
    for part in np.unique(group):
        inside = np.isin(owner, owners[group == part])
        users = events.iloc[np.flatnonzero(inside)].reset_index(drop=True)
        rows = needed[inside]
        if hasattr(source.model, "variants"):
            models.append(source.model.variants(users, rows, options))  # (S, pairs here, D)
        else:
            models.append(_unit(np.asarray(source.model.interest_vectors(users)))[rows][None])
        histories.append(_unit(source.history.interest_vectors(users))[rows])
    model, history = np.concatenate(models, axis=1), np.concatenate(histories)  # rows in `needed` order
    calibration = calibrate(
        dataset_id, events, model, history, text_vectors, cutoff, config.analytics.history_weight,
        sharpness=options, rows=np.flatnonzero(needed), pairs=measured,
    )
    if source.weight is None:
        source.weights[dataset_id] = calibration.weight
    if sharpness is not None:
        sharpness[dataset_id] = calibration.sharpness
    return calibration


def _write_calibrations(store: Store, source: VectorSource, calibrations: Any) -> None:
    for c in calibrations:
        store.write_calibration(
            c.dataset_id, source_label(source), c.cutoff.to_pydatetime(), c.weight, c.sharpness, c.pairs,
            c.stored_mrr, c.history_mrr, c.model_mrr, c.weights_json(),
        )


def _by_name(store: Store, calibrations: dict[int, Calibration]) -> dict[str, Calibration]:
    names = dict(zip(store.datasets()["dataset_id"].astype(int), store.datasets()["name"]))
    return {names.get(d, str(d)): c for d, c in sorted(calibrations.items())}


def _score_update(
    store: Store,
    config: Config,
    source: VectorSource,
    text_vectors: Callable[[list[str]], np.ndarray],
    topics: Topics,
    since: pd.Timestamp | None,
    started: float,
    progress: Callable[[float, str], None] | None,
) -> ScoreReport:
    affected = store.unscored_events()
    if since is not None:
        affected = pd.concat([affected, store.users_with_events_since(since.to_pydatetime())])
    affected = affected.groupby(["dataset_id", "user_id"], as_index=False)["ts"].min()
    since_text = None if since is None else since.isoformat()
    if affected.empty:
        return ScoreReport(source_label(source), "update", 0, 0, 0, time.perf_counter() - started, 0, "", since_text)
    histories = store.user_histories(affected)
    calibrations: dict[int, Calibration] = {}
    if isinstance(source, BlendedSource):  # a dataset scored for the first time is calibrated first
        for dataset_id in sorted(set(histories["dataset_id"].astype(int)) - set(source.weights)):
            if store.calibration_cutoff(dataset_id) is None or source.weight is None:
                calibrations[dataset_id] = calibrate_source(
                    source, store.events([dataset_id]), dataset_id, text_vectors, config)
    first = histories[["dataset_id", "user_id"]].merge(
        affected.astype({"dataset_id": "int32"}), on=["dataset_id", "user_id"], how="left"
    )["ts"]
    keep = (histories["ts"] >= first).to_numpy()  # (aligned Series: no per-row Timestamp objects)
    # earlier events are context only: the model skips the windows and predictions it need not make
    state = chunk_state(store, config, source, topics, sorted(int(d) for d in histories["dataset_id"].unique()), text_vectors)
    bounds = _chunk_bounds(histories, keep)  # chunks of about _CHUNK_EVENTS new events
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        parts.append(score_chunk(state, histories.iloc[a:b], keep[a:b]))
        if progress is not None:
            progress(b / len(histories), f"{int(keep[:b].sum()):,} of {int(keep.sum()):,} events")
    compact = CompactVectors.concatenate([p.compact for p in parts], topics.vectors.shape[1])
    vectors = compact.dequantised()  # (new events, D) what the store will give back, bit for bit
    event_topics = np.concatenate([p.topic for p in parts])
    sims = np.concatenate([p.topic_sims for p in parts])
    new = histories.loc[keep].reset_index(drop=True)
    from_day = new.groupby("dataset_id")["local_ts"].min().to_numpy("datetime64[D]")
    datasets = sorted(new["dataset_id"].unique().tolist())
    reweigh = span_rows_stored(store, config, datasets)
    if reweigh:  # the stored vectors the whole-span re-weigh needs (vectors/span.py), before they are replaced
        event_ids = histories["event_id"].to_numpy(np.int64)
        change = span_change(store, config, histories, keep, store.has_event_vectors(event_ids))
        old_vectors = store.event_vectors(event_ids[change.reads]).reshape(-1, vectors.shape[1])
    with store.transaction():
        store.write_event_vectors(new["dataset_id"].to_numpy(), new["event_id"].to_numpy(), event_topics, compact, sims)
        starts = dict(zip(datasets, from_day))
        # dated windows from the earliest one touched; whole-span ones re-weighed by the touched
        # people (or, for a file scored before they were stored, recomputed from every event)
        dated = [w for w, _, _ in stored_aggregates(config) if w not in SPAN_WINDOWS]
        earliest = min((window_floor(d, w) for d in from_day for w in dated), default=None) if reweigh else None
        events, stored_vectors = store.scored_events(datasets, None if earliest is None else pd.Timestamp(earliest).to_pydatetime())
        scored = ScoredEvents(events, stored_vectors, topics, config)
        _write_aggregates(store, config, scored, datasets, starts, span=not reweigh)
        if reweigh:
            update_span_aggregates(store, config, topics, change, old_vectors, vectors, datasets)
        _write_calibrations(store, source, calibrations.values())
        elapsed = time.perf_counter() - started
        store.record_score_run(source_label(source), since.to_pydatetime() if since is not None else None, len(new), len(affected), elapsed)
    return ScoreReport(
        source_label(source), "update", len(new), len(affected), len(histories), elapsed, len(topics), topics.source,
        since_text, _by_name(store, calibrations) if calibrations else {},
    )


def adapt_to_dataset(
    store: Store,
    config: Config,
    dataset: str,
    *,
    minutes: float,
    encoder: Any | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[int, ScoreReport]:
    """Fine-tune the newest model on one dataset within `minutes` (early stopping on its own
    validation), register it as that dataset's ("adapted:NAME") and re-score the dataset with it.
    Returns (checkpoint id, the score report with the dataset's new quality figure)."""
    from interestgeo.model import CheckpointError, adapted_name, train_model

    try:
        checkpoint_id = train_model(
            store, config, name=adapted_name(dataset), dataset=dataset, init_from="model", minutes=minutes, log=log,
        )
    except CheckpointError as exc:
        raise LookupError(str(exc)) from None
    dataset_id = store.dataset_id(dataset)
    report = score_store(store, config, encoder=encoder, datasets=[dataset_id], progress=progress)
    return checkpoint_id, report


def fill_missing_similarities(store: Store) -> int:
    """Give every stored vector its topic similarities where it has none (see Store.fill_topic_sims):
    a file scored by an older version then loads in the dashboard without waiting for its vectors."""
    topics = store.analytics_topics()
    if topics is None:
        return 0
    with store.transaction():
        return store.fill_topic_sims(lambda vectors: topic_similarities(vectors, topics))
