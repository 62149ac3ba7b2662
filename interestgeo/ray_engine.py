"""Scoring beyond one machine: the local engine's vectors, computed as Ray Data stages.

Why Ray Data (and not Dask or Spark): the work is Python all the way down (a transformers or
numpy text encoder, a PyTorch model, numpy aggregates), so the engine must run our own functions
on many machines with long-lived state (a loaded model per worker), stream Parquet in and out,
and run unchanged on a laptop (`ray.init()` starts a local cluster) and on a real cluster
(`--ray-address`). Ray Data's `map_batches`/`map_groups` with actor pools is exactly that.

What runs where, and why:

1. **Export** (driver): the store writes the events as Hive-partitioned Parquet by dataset, week
   and H3 res-3 parent (`Store.export_parquet`, which says why those keys).
2. **Embed** (Ray, actors): the distinct texts the store's cache lacks are encoded by long-lived
   actors, each holding one `encoder_for(config.text)`; the vectors go back into the store's
   (model id, text hash) cache, so every text is still encoded once ever, whichever engine ran.
3. **Calibrate** (driver): per dataset, the history weight and sharpness, chosen on the dataset's
   most recent tenth exactly as the local engine does (vectors/refresh.py). It runs the model over a few
   windows only, and every vector depends on its result, so it happens once, before scoring.
4. **Score** (Ray, actors): the model needs each user's whole history in order (a vector depends
   on everything the user did before), and the Parquet folders cut histories by week and place.
   So events are hash-partitioned by user into buckets of about `bucket_events` events
   (`groupby(bucket).map_groups`): a bucket holds whole users and is one well-filled model batch.
   Each actor holds the model once and calls the very function the local engine calls per chunk
   of users, so both engines give the same vectors. Vectors are written as Parquet partitioned
   like the events.
5. **Aggregate** (Ray, tasks): user x window and cell x window vectors, one task per
   (dataset, week) folder of vectors. Stored windows (hour, day, week) never cross a week, and a
   user's week is inside its week folder, so every aggregate is exact with no global shuffle.
6. **Store** (driver): one transaction replaces the vectors and aggregates (DuckDB reads the
   Parquet itself), the topics, the calibrations and the run record: all or nothing, as locally.

On one machine this is slower than the local engine (Ray's start, the Parquet round trip); it
exists for data that does not fit one machine's time or memory (benchmarks/bench_scale.py).
Ray is an optional extra (`pip install 'interestgeo[ray]'`); nothing imports it unless asked.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgeo.config import Config, TextConfig
from interestgeo.schema import user_keys
from interestgeo.windows import monday_on_or_before

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.vectors import ScoreReport

__all__ = ["RayOptions", "RayEngineError", "ray_cluster", "embed_missing_texts", "score_store_ray", "TextLookup"]


class RayEngineError(RuntimeError):
    """The Ray engine cannot run (Ray missing, cluster unreachable): a one-line message for users."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs."""

    # None: start a local cluster in this process; "auto" or "ray://host:10001": join that cluster
    address: str | None = None
    # actors per stage (encoders, scorers): the width of the run, and the benchmark's "workers"
    workers: int = 2
    # CPUs of a local cluster (None: this machine's). Each actor asks for `actor_cpus`, so reads,
    # writes and the shuffle keep CPUs of their own (on 2 cores, whole-CPU actors starved the reads)
    num_cpus: int | None = None
    actor_cpus: float = 0.5
    # a local cluster's shared-memory object store; Ray spills to disk beyond it
    object_store_mb: int = 512
    # events per user bucket of the scoring stage (the local engine scores 20,000-event chunks)
    bucket_events: int = 50_000
    # distinct texts per batch of the embedding stage
    embed_batch: int = 2048
    # where the Parquet goes (None: a temporary folder, removed after the run); on a real cluster,
    # storage every node reads (a shared mount or an s3:// URI)
    work_dir: str | None = None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is a separate import)
    except ImportError:
        raise RayEngineError(
            "the Ray engine needs Ray: pip install 'interestgeo[ray]' (or use --engine local)"
        ) from None
    return ray


@contextmanager
def ray_cluster(options: RayOptions) -> Iterator[Any]:
    """A connected Ray (this process's local cluster, or the one at `options.address`); shut down
    on exit when this call started it. Ray's own logging stays quiet: the CLI renders progress."""
    # Ray Data logs each stage's progress to stderr; the CLI renders progress itself
    ray = _import_ray()
    quiet = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    started = False
    if not ray.is_initialized():
        common: dict[str, Any] = {"logging_level": "error", "log_to_driver": False, "include_dashboard": False}
        try:
            if options.address:
                # ship this package's code to the cluster's workers (its dependencies must be installed there)
                import interestgeo

                ray.init(address=options.address, runtime_env={"py_modules": [interestgeo]}, **common)
            else:
                ray.init(
                    num_cpus=options.num_cpus or os.cpu_count() or 1,
                    object_store_memory=int(options.object_store_mb) * 1024**2, **common,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = options.address or "a local cluster"
            raise RayEngineError(f"cannot start Ray at {where}: {str(exc).splitlines()[0]}") from None
        started = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # the hash shuffle's aggregator actors would each reserve a whole CPU by default
    context.hash_shuffle_operator_actor_num_cpus_override = min(options.actor_cpus, 0.25)
    context.max_hash_shuffle_aggregators = max(1, options.workers)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


class TextLookup:
    """texts -> (n, D) vectors from a fixed table: the scoring actors' `text_vectors` (picklable,
    shipped once through the object store; the store's cache stays on the driver)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (U, D)

    def __call__(self, texts: list[str]) -> np.ndarray:
        try:
            return self.vectors[[self.rows[t] for t in texts]]
        except KeyError as exc:
            raise LookupError(f"text {str(exc)[:60]} has no embedding in this run's table") from None


# ---------------------------------------------------------------------------------------- embed


class _Encoder:
    """A Ray actor holding one text encoder: batches of texts -> their vectors."""

    def __init__(self, text_config: TextConfig, threads: int) -> None:
        import torch

        from interestgeo.text import encoder_for

        torch.set_num_threads(threads)
        self.encoder = encoder_for(text_config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"text": np.asarray(texts, dtype=object), "vector": self.encoder.encode(texts)}  # (B, D)


def embed_missing_texts(
    store: Store, config: Config, texts: list[str], options: RayOptions, model_id: str,
) -> int:
    """Encode the `texts` the store's cache lacks for `model_id` on Ray actors and cache them;
    returns how many were encoded. Needs a connected Ray (`ray_cluster`)."""
    import ray.data

    from interestgeo.text import text_hashes

    hashes = text_hashes(texts)
    cached = store.cached_embeddings(model_id, hashes)
    missing = [t for t, h in zip(texts, hashes) if h not in cached]
    if not missing:
        return 0
    encoded = ray.data.from_items([{"text": t} for t in missing]).map_batches(
        _Encoder,
        fn_constructor_kwargs={"text_config": config.text, "threads": max(1, int(options.actor_cpus))},
        batch_size=options.embed_batch, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, options.workers)), num_cpus=options.actor_cpus, max_restarts=0,
    )
    for batch in encoded.iter_batches(batch_size=options.embed_batch, batch_format="numpy"):
        texts_done = [str(t) for t in batch["text"]]
        store.put_embeddings(model_id, text_hashes(texts_done), texts_done, np.asarray(batch["vector"], np.float32))
    return len(missing)


# ---------------------------------------------------------------------------------------- score


def _user_buckets(table: Any, buckets: int) -> np.ndarray:
    """(N,) int64 bucket of each event's (dataset, user): a stable hash (Python's hash() is salted
    per process, and every process must agree)."""
    keys = user_keys(table.select(["dataset_id", "user_id"]).to_pandas()).to_numpy(dtype=object)
    return (pd.util.hash_array(keys) % np.uint64(buckets)).astype(np.int64)


def _partition_keys(day_ns: np.ndarray, cells: np.ndarray, parent_resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(week, parent) of rows with local times `day_ns` and H3 `cells`: Store.export_parquet's keys
    (the Monday of the local week, as datetime64[D]; the cell's parent)."""
    from interestgeo.cells import cell_to_parent

    day = np.asarray(day_ns).astype("datetime64[D]").astype(np.int64)
    week = monday_on_or_before(day).astype("datetime64[D]")
    return week, cell_to_parent(cells, parent_resolution)


def _write_partitioned(
    root: Path, name: str, table: Any, dataset: np.ndarray, week: np.ndarray, parent: np.ndarray
) -> None:
    """Write `table`'s rows under root/dataset_id=D/week=W/parent=P/name, one file per folder (the
    key columns stay in the files too, as in Store.export_parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.append_column("week", pa.array(week)).append_column("parent", pa.array(parent, pa.int64()))
    groups = pd.DataFrame({"d": dataset, "w": week, "p": parent}).groupby(["d", "w", "p"], sort=False).indices
    for (d, w, p), rows in groups.items():
        folder = root / f"dataset_id={d}" / f"week={pd.Timestamp(w).date()}" / f"parent={p}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(rows)), folder / name)


class _BucketScorer:
    """A Ray actor holding the detached scoring state (the model, each dataset's world and
    calibration, the topics, the text table): one bucket of whole users -> `vectors.score_chunk`,
    the very call the local engine makes per chunk. It writes its results as Parquet (vectors and
    cell sums partitioned like the events, user windows as one file) and returns one summary row,
    so no vector travels through the driver."""

    def __init__(self, state: Any, out: str, parent_resolution: int, threads: int) -> None:
        import ray
        import torch

        from interestgeo.vectors.chunks import keep_large_allocations

        keep_large_allocations()
        torch.set_num_threads(threads)
        self.state = ray.get(state) if isinstance(state, ray.ObjectRef) else state
        self.out = Path(out)
        self.parent_resolution = parent_resolution

    def __call__(self, table: Any) -> dict[str, np.ndarray]:
        from interestgeo.store import Store
        from interestgeo.vectors.chunks import score_chunk
        from interestgeo.vectors.staging import CELL_COLUMNS, _arrow_with_vectors, _columns

        bucket = int(table.column("bucket")[0].as_py())
        name = f"bucket-{bucket:05d}.parquet"  # one name per bucket: a retried task overwrites its files
        events = Store.events_from_arrow(table)
        events = events.sort_values(["dataset_id", "user_id", "ts", "event_id"], kind="stable").reset_index(drop=True)
        result = score_chunk(self.state, events)
        week, parent = _partition_keys(events["local_ts"].to_numpy("datetime64[ns]"), events["cell"].to_numpy(np.int64),
                                       self.parent_resolution)
        vectors = _arrow_with_vectors(  # compact, as the store holds them (store/compact.py)
            {"dataset_id": result.dataset_id, "event_id": result.event_id, "topic": result.topic,
             "scale": result.compact.scales},
            q=result.compact.codes, topic_sims=result.topic_sims,
        )
        _write_partitioned(self.out / "vectors", name, vectors, result.dataset_id, week, parent)
        cells = result.cell_windows
        cell_week, cell_parent = _partition_keys(cells["window_start"].to_numpy("datetime64[ns]"),
                                                 cells["cell"].to_numpy(np.int64), self.parent_resolution)
        sums = _arrow_with_vectors(_columns(cells, CELL_COLUMNS), sum=result.cell_window_sums)
        _write_partitioned(self.out / "cell_sums", name, sums, cells["dataset_id"].to_numpy(), cell_week, cell_parent)
        if len(result.user_windows):
            import pyarrow.parquet as pq

            (self.out / "user_windows").mkdir(parents=True, exist_ok=True)
            users = _arrow_with_vectors(_columns(result.user_windows, _USER_COLUMNS), vector=result.user_window_vectors)
            pq.write_table(users, self.out / "user_windows" / name)
        n_users = int(events.groupby(["dataset_id", "user_id"], sort=False).ngroups)
        return {"bucket": np.array([bucket]), "events": np.array([len(result)]), "users": np.array([n_users])}


_USER_COLUMNS = {"dataset_id": np.int32, "user_id": object, "window_size": object,
                 "window_start": "datetime64[us]", "events": np.int32, "coherence": np.float32}


# ------------------------------------------------------------------------------------ aggregate


def _merge_cell_sums(folder: str, topics: int) -> dict[str, Any]:
    """The cell x window vectors of one (dataset, week, parent) folder of per-bucket sums: every
    stored window lies inside a week and every stored cell inside its parent, so the folder holds
    all the users of each of its cells x windows and the merge is exact (vectors/staging.py)."""
    from interestgeo.vectors.staging import merge_cell_sums

    out = Path(folder) / "merged"
    out.mkdir(exist_ok=True)
    paths = [str(p) for p in sorted(Path(folder).glob("bucket-*.parquet"))]  # one file per bucket, its keys unique
    return {"file": merge_cell_sums(paths, topics, out / "cell_window_vectors.parquet")}


# ---------------------------------------------------------------------------------------- whole


def score_store_ray(
    store: Store,
    config: Config,
    options: RayOptions | None = None,
    *,
    source: Any | None = None,
    encoder: Any | None = None,
    datasets: list[int] | None = None,
    refresh_topics: bool = False,
    progress: Callable[[float, str], None] | None = None,
    since: Any = None,
    update: bool = False,
) -> ScoreReport:
    """`vectors.score_store` (a full score) on Ray: the same vectors, aggregates, topics and
    calibrations in the store. Raises RayEngineError / LookupError with one-line messages.
    A dynamic update (`since`, `update`) touches few users: it runs locally, never here."""
    from interestgeo.vectors.sources import _text_vectors_fn, load_source

    if since is not None or update:
        raise RayEngineError("the Ray engine runs full scores: run an update (--since) with --engine local")
    options = options or RayOptions()
    say = progress or (lambda _f, _m: None)
    started = time.perf_counter()
    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="interestgeo-ray-"))
    parent_resolution = min([store.PARQUET_PARENT_RESOLUTION, *config.analytics.stored_resolutions])
    try:
        with ray_cluster(options) as ray:
            if encoder is None:
                from interestgeo.text import encoder_for

                encoder = encoder_for(config.text)
            texts = store.distinct_texts(datasets)
            if not texts:
                raise LookupError("no events to score: ingest a CSV first (`interestgeo ingest FILE`)")
            say(0.02, f"embedding {len(texts):,} distinct texts on Ray")
            embed_missing_texts(store, config, texts, options, encoder.model_id)
            text_vectors = _text_vectors_fn(store, encoder)  # every text is cached now: lookups only
            if source is None:
                source = load_source(store, config, encoder=encoder)
            store.ensure_analytics_schema()
            say(0.1, "calibrating")
            run = _prepare(store, config, source, text_vectors, datasets, refresh_topics)
            n_events = store.export_parquet(work / "events", datasets=datasets, parent_resolution=parent_resolution)
            say(0.2, f"scoring {n_events:,} events on Ray")
            buckets = max(options.workers, -(-n_events // options.bucket_events))
            summary = ray.data.read_parquet(str(work / "events"), partitioning=None).map_batches(
                lambda table: table.append_column("bucket", _pa_array(_user_buckets(table, buckets))),
                batch_format="pyarrow",
            ).groupby("bucket", num_partitions=buckets).map_groups(
                _BucketScorer,
                fn_constructor_kwargs={"state": ray.put(run["state"]), "out": str(work),
                                       "parent_resolution": parent_resolution, "threads": max(1, int(options.actor_cpus))},
                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=max(1, options.workers)),
                num_cpus=options.actor_cpus, max_restarts=0,  # a failed run is rerun whole (see _store_results)
            ).to_pandas()
            scored_events, users = int(summary["events"].sum()), int(summary["users"].sum())
            if scored_events != n_events:
                raise RuntimeError(f"the Ray engine scored {scored_events:,} of {n_events:,} events")
            say(0.7, "aggregating cells per partition")
            folders = sorted(str(p) for p in (work / "cell_sums").glob("dataset_id=*/week=*/parent=*"))
            n_topics = len(run["topics"])
            merged = ray.data.from_items([{"folder": f} for f in folders]).map(
                lambda row: _merge_cell_sums(row["folder"], n_topics), num_cpus=options.actor_cpus,
            ).to_pandas() if folders else pd.DataFrame({"file": []})
            say(0.85, "storing")
            report = _store_results(store, config, run, work, merged["file"].tolist(), users, started)
    finally:
        if options.work_dir is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    say(1.0, "done")
    return report


def _pa_array(values: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.array(values)


def _prepare(
    store: Store, config: Config, source: Any, text_vectors: Callable[[list[str]], np.ndarray],
    datasets: list[int] | None, refresh_topics: bool,
) -> dict[str, Any]:
    """The driver's part before the stages, as the local engine does it: calibrate each dataset,
    choose the topics, and detach the state the actors hold."""
    from interestgeo.vectors.chunks import chunk_state
    from interestgeo.vectors.refresh import _dataset_slices, _topics, calibrate_source
    from interestgeo.vectors.sources import BlendedSource

    events = store.events(datasets)
    calibrations = {}
    if isinstance(source, BlendedSource):
        for dataset_id, rows in _dataset_slices(events):
            calibrations[dataset_id] = calibrate_source(
                source, events.iloc[rows].reset_index(drop=True), dataset_id, text_vectors, config
            )
    topics, fresh = _topics(None if refresh_topics else store.analytics_topics(), config, text_vectors, lambda: events)
    dataset_ids = sorted(int(d) for d in events["dataset_id"].unique())
    state = chunk_state(store, config, source, topics, dataset_ids, text_vectors, detach=True)
    return {"source": source, "state": state, "topics": topics, "fresh": fresh, "calibrations": calibrations,
            "datasets": dataset_ids}


def _store_results(
    store: Store, config: Config, run: dict[str, Any], work: Path, cell_files: list[str], users: int, started: float,
) -> ScoreReport:
    """One transaction: vectors, aggregates, topics, calibrations and the run record (DuckDB reads
    the stages' Parquet itself)."""
    from interestgeo.vectors.chunks import stored_aggregates
    from interestgeo.vectors.refresh import ScoreReport, _by_name, _write_calibrations
    from interestgeo.vectors.sources import source_label

    topics, source, ids = run["topics"], run["source"], run["datasets"]
    with store.transaction():
        if run["fresh"]:
            store.write_topics(topics.labels, topics.source, topics.vectors)
        store.delete_event_vectors(ids)
        events = store.insert_staged("event_vectors", sorted(str(p) for p in (work / "vectors").rglob("*.parquet")))
        for window, resolutions, with_users in stored_aggregates(config):
            if with_users:
                store.replace_window_vectors("user_window_vectors", window, {}, np.zeros((0, 0)), datasets=ids)
            store.replace_window_vectors("cell_window_vectors", window, {}, np.zeros((0, 0)), datasets=ids,
                                         resolution=list(resolutions))
        user_files = sorted(str(p) for p in (work / "user_windows").glob("*.parquet"))
        for window, _, with_users in stored_aggregates(config):
            if with_users:
                store.insert_staged("user_window_vectors", user_files, window)
        store.insert_staged("cell_window_vectors", cell_files)
        _write_calibrations(store, source, run["calibrations"].values())
        elapsed = time.perf_counter() - started
        store.record_score_run(source_label(source), None, events, users, elapsed)
    return ScoreReport(
        source_label(source), "full", events, users, events, elapsed, len(topics), topics.source, None,
        _by_name(store, run["calibrations"]),
    )
