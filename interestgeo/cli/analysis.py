"""Commands that compute on the stored events: `score` (interest vectors), `query`, `explain`,
`drift` and `forecast`.

Each opens the store, makes one core call that returns a typed result (or a JSON-ready payload
and its text), and prints JSON or text (`options.run_on_store`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from interestgeo.access import require_analyst
from interestgeo.cli.progress import Bars
from interestgeo.cli.render import (
    drift_json, drift_text, explain_text, forecast_text, query_json, query_text, score_text,
)
from interestgeo.cli.options import (
    CliError, Subparsers, add_command, add_dataset_option, add_filter_options, filters_from_args, run_on_store,
)
from interestgeo.config import Config
from interestgeo.store import Store

__all__ = [
    "add_drift_parser", "add_explain_parser", "add_forecast_parser", "add_query_parser", "add_score_parser",
    "score_and_report",
]


# ---------------------------------------------------------------------------- score


def add_score_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "score", _run_score, json_help="", help="compute interest vectors with the trained model",
        description="Run the trained model over every user's history; store per-event, user x window and "
        "cell x window interest vectors and the interest topics.",
        interrupted="the stored interest vectors are as they were (a score run stores everything at once at its end)",
    )
    add_dataset_option(parser, "only this dataset (repeatable)")
    parser.add_argument(
        "--since", default=None, metavar="TIME|new",
        help="dynamic update without retraining: only users with unscored events (new) or events at/after TIME (UTC)",
    )
    parser.add_argument("--refresh-topics", action="store_true", help="re-derive the interest topics")
    parser.add_argument(
        "--source", choices=("model", "recency"), default="model",
        help="model: the trained checkpoint (default); recency: decayed mean of text embeddings, no training needed",
    )
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process (default); ray: Ray Data stages on a Ray cluster (pip install 'interestgeo[ray]')",
    )
    parser.add_argument(
        "--ray-address", default=None, metavar="ADDRESS",
        help="with --engine ray: the cluster to join (auto, or ray://HOST:10001); default a local cluster on this machine",
    )
    parser.add_argument("--ray-workers", type=int, default=2, metavar="N", help="with --engine ray: scoring actors (default 2)")


def _run_score(args: argparse.Namespace) -> int:
    from interestgeo.ray_engine import RayEngineError, RayOptions, score_store_ray  # Ray itself loads only when run

    engine = None
    if args.engine == "ray":
        if args.since is not None:
            raise CliError("--engine ray runs full scores: run an update (--since) with --engine local")
        if args.ray_workers < 1:
            raise CliError("--ray-workers must be at least 1")
        engine = functools.partial(score_store_ray, options=RayOptions(address=args.ray_address, workers=args.ray_workers))
    try:
        return run_on_store(
            args,
            lambda store, config: score_and_report(
                store, config, datasets=args.dataset, since=args.since, refresh_topics=args.refresh_topics,
                source_name=args.source, show_progress=not args.json, engine=engine,
            ),
        )
    except RayEngineError as exc:
        raise CliError(str(exc)) from None


def score_and_report(
    store: Store,
    config: Config,
    *,
    datasets: list[str] | None = None,
    since: str | None = None,
    refresh_topics: bool = False,
    source_name: str = "model",
    show_progress: bool = True,
    engine: Callable[..., Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """Score (`vectors.score_store`, or `engine` in its place: `--engine ray`) with a progress bar on
    stderr; (JSON-ready report, its text). `since` is a time or "new" (a dynamic update)."""
    from interestgeo.text import embed_texts, encoder_for, unreadable_warning
    from interestgeo.vectors import RecencySource, load_source, score_store
    from interestgeo.vectors.chunks import keep_large_allocations

    keep_large_allocations()  # this process is a scoring run's (not a long-lived server's): see there
    ids = None
    if datasets:
        ids = [store.dataset_id(name) for name in datasets]
        if None in ids:
            raise ValueError(f"unknown dataset among {', '.join(datasets)}")
    encoder = encoder_for(config.text)
    if source_name == "recency":
        source = RecencySource(lambda texts: embed_texts(store, encoder, texts, warn=None),
                               config.analytics.history_half_life_days)
    else:
        source = load_source(store, config, encoder=encoder)
    with Bars(enabled=show_progress, unit="%") as bars:

        def progress(fraction: float, message: str) -> None:
            bars("scoring", round(100 * fraction), 100, message)

        report = (engine or score_store)(
            store, config, source=source, encoder=encoder, datasets=ids,
            since=None if since in (None, "new") else since, update=since is not None, refresh_topics=refresh_topics,
            progress=progress,
        )
    # texts the encoder cannot read make vectors that mean little: say so, with the encoder that would
    warning = unreadable_warning(encoder, store.distinct_texts(ids), config.text.unknown_token_warn_share, sample=5000)
    warnings = [warning] if warning else []
    return {**report.to_dict(), "warnings": warnings}, score_text(report, warnings)


# ---------------------------------------------------------------------------- query


def add_query_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "query", _run_query, help="where and when people are interested in a phrase",
        description="Rank H3 cells and hours of the week by interest in a free-text phrase (k threshold applied).",
    )
    parser.add_argument("phrase", help='e.g. "late-night food" or "jazz"')
    add_filter_options(parser)
    parser.add_argument("--resolution", type=int, default=8, help="H3 resolution of the ranked cells (default 8)")
    parser.add_argument("--top", type=int, default=10, help="cells to show (default 10)")


def _run_query(args: argparse.Namespace) -> int:
    from interestgeo.analytics import embed_phrase, load_scored, query_interest, stored_query
    from interestgeo.text import encoder_for

    def command(store: Store, config: Config) -> tuple[dict, str]:
        encoder = encoder_for(config.text)
        filters = filters_from_args(args, store)
        phrase_vector = embed_phrase(encoder, args.phrase, store)
        # a question of everyone: the stored aggregates; any other filter: the events (vectors left in the store)
        result = stored_query(store, config, args.phrase, phrase_vector, filters, args.resolution)
        if result is None:
            scored = load_scored(store, config, open_store=lambda: contextlib.nullcontext(store))
            result = query_interest(scored, args.phrase, phrase_vector, filters, args.resolution)
        return (query_json(result, filters, args.resolution, args.top),
                query_text(result, args.resolution, args.top, config.privacy.k_min_users))

    return run_on_store(args, command)


# ---------------------------------------------------------------------------- explain


def add_explain_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "explain", _run_explain, json_help="",
        help="why the model sees a user's interests as it does (analyst-only)",
        description="Attention roll-up and leave-one-out occlusion of a user's past events, and the effect of time "
        "and place.",
    )
    parser.add_argument("user", help="user id")
    add_dataset_option(parser, "the user's dataset (needed when ambiguous)", repeatable=False)
    parser.add_argument("--at", default=None, metavar="TIME", help="explain the interest at this time (UTC; default: latest)")
    parser.add_argument("--top", type=int, default=10, help="past events to show (default 10)")


def _run_explain(args: argparse.Namespace) -> int:
    from interestgeo.analytics.explain import explain_stored_user

    def command(store: Store, config: Config) -> tuple[dict, str]:
        explanation = explain_stored_user(store, config, args.user, dataset=args.dataset, at=args.at)
        return explanation.to_dict(), explain_text(explanation, args.top)

    return run_on_store(args, command)


# ---------------------------------------------------------------------------- drift


def add_drift_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "drift", _run_drift, help="how interests changed over time in a region or for a user",
        description="Distance between consecutive windows' interest vectors, change points, rising and falling topics.",
    )
    add_filter_options(parser)
    parser.add_argument("--user", default=None, help="one user's drift instead of a region's (analyst-only)")
    parser.add_argument("--window", choices=("day", "week", "month"), default="week", help="window size (default week)")


def _run_drift(args: argparse.Namespace) -> int:
    from interestgeo.analytics import load_scored, region_drift, stored_drift, user_drift

    def command(store: Store, config: Config) -> tuple[dict, str]:
        if args.user is not None:  # refused before the scored events load (user_drift would refuse after)
            require_analyst("one person's drift")
        filters = filters_from_args(args, store)
        user = None
        if args.user is not None:
            user = (filters.datasets[0] if filters.datasets else _only_dataset(store), args.user)
        # a region of everyone: the stored aggregates; a person or other filters: the events
        drift = None if user is not None else stored_drift(store, config, filters, args.window)
        if drift is None:
            scored = load_scored(store, config, open_store=lambda: contextlib.nullcontext(store))
            if user is not None:
                drift = user_drift(scored, user[0], user[1], args.window)
            else:
                drift = region_drift(scored, filters, args.window)
        return (drift_json(drift, filters, args.window, user is not None),
                drift_text(drift, args.window, args.user, config.privacy.k_min_users))

    return run_on_store(args, command)


def _only_dataset(store: Store) -> int:
    ids = store.datasets()["dataset_id"].tolist()
    if len(ids) != 1:
        raise CliError(f"the store holds {len(ids)} datasets: name the user's with --dataset")
    return int(ids[0])


# ---------------------------------------------------------------------------- forecast


def add_forecast_parser(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "forecast", _run_forecast, json_help='print one JSON object {"forecast": ..., "backtest": ...}',
        help="forecast topic shares per region, backtested against simple baselines",
        description="For everywhere, each named area and each coarse H3 cell with enough windows of at least k "
        "people: the topic shares of the next windows with an interval, the topics expected to rise or fall, and "
        "a rolling-origin backtest of the forecast beside persistence, a moving average and (days) seasonal naive.",
    )
    add_dataset_option(parser, "dataset (repeatable; default all)")
    parser.add_argument(
        "--region", default=None,
        help="one region instead of all: a named area (e.g. 'Brooklyn'), a GeoJSON file or H3 cells (hex, comma-separated)",
    )
    parser.add_argument("--window", choices=("week", "day"), default="week", help="window size (default week)")
    parser.add_argument("--horizon", type=int, default=None, help="windows ahead (default config forecast.horizon)")


def _run_forecast(args: argparse.Namespace) -> int:
    import shapely

    from interestgeo.analytics import filters_from_options, load_scored
    from interestgeo.areas import named_area_geometries
    from interestgeo.forecast import forecast_all, forecast_region, forecast_to_json

    def command(store: Store, config: Config) -> tuple[dict, str]:
        filters = filters_from_options(store, datasets=args.dataset)
        scored = load_scored(store, config, vector_loader=store.event_vectors)  # shares only: no vectors read
        if args.region is None:
            fc = forecast_all(scored, filters, args.window, args.horizon)
        else:
            areas = named_area_geometries()
            if args.region in areas:
                region = filters.replace(geojson=shapely.to_geojson(areas[args.region]))
            else:
                try:
                    region = filters_from_options(store, datasets=args.dataset, region=args.region)
                except ValueError as exc:
                    raise CliError(f"{exc}, nor a named area (e.g. 'Brooklyn' or 'Clinton (Manhattan)')") from None
            fc = forecast_region(scored, region, args.window, args.horizon, label=args.region)
        return forecast_to_json(fc), forecast_text(fc)

    return run_on_store(args, command)
