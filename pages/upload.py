"""Upload: bring a CSV, check how its columns were understood, load it, analyse it.

Widgets -> `ingest.detect_columns` (preview) -> `ingest.ingest_file` (validation, storage, the
report) -> the new dataset shows up in the sidebar's dataset filter. Then the new events are scored
with the source of the last score run (`vectors.score_store(update=True)`: the model runs forward
over the affected users' histories, no retraining). The page closes the app's read-only store
handle for the load and writes through its own connection.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from interestgeo.config import Config
from interestgeo.ingest import IngestError, detect_columns, detect_format, ingest_file
from interestgeo.pseudonym import PseudonymKeyError, key_path, load_or_create_key
from interestgeo.store import Store
from interestgeo.vectors import last_run_source, score_store
from pages._ui import (
    ACCOUNT_KEY,
    SCORE_HINT,
    TRAINING,
    app_config,
    config_key,
    csv_download,
    datasets,
    db_path,
    md,
    release_store,
    role,
    run_page,
    text_encoder,
)

NOT_MAPPED = "— not mapped —"
# Rows of the file shown beside the detected mapping: enough to recognise each column.
PREVIEW_ROWS = 8
# Canonical fields in the order a person checks them; `text` is a multiselect (columns are joined).
SINGLE_FIELDS = ("user_id", "ts", "lat", "lon", "tz_offset_min", "item_id", "category", "category_path", "event_type")
FIELD_HELP = {
    "user_id": "who (required)",
    "ts": "when (required): ISO 8601, epoch s/ms or the Foursquare format",
    "lat": "latitude, WGS84 (required)",
    "lon": "longitude, WGS84 (required)",
    "tz_offset_min": "offset from UTC in minutes (optional; local hour of day uses it)",
    "item_id": "venue or product id (optional)",
    "category": "category (optional)",
    "category_path": "category path like `Food > Cafe` (optional; its top level names topics)",
    "event_type": "event type (optional)",
}


def page() -> None:
    config = app_config()
    st.title("Upload a CSV")
    limit_mb = int(st.get_option("server.maxUploadSize"))
    st.markdown(
        f"One row per event: who, when, where (latitude/longitude) and what (text such as a venue name, "
        f"a product title or a search query). Plain or gzip CSV; comma, tab or semicolon. "
        f"**Size limit: {limit_mb} MB per file** (set in `.streamlit/config.toml`)."
    )
    _delete_dataset(config)
    upload = st.file_uploader("CSV file", type=["csv", "gz", "tsv", "txt"], key="upload_file")
    last = st.session_state.get("upload_report")
    if upload is None:
        if last is not None:
            _show_report(last)
        return
    if last is not None and last.get("file_id") == upload.file_id:
        _show_report(last)  # loaded: its copy is gone, and the report is what is left to see
        return
    source = upload_copy(upload.file_id, upload.name)
    if not source.exists():
        source.write_bytes(upload.getvalue())
    try:
        detected = detect_columns(source)
    except IngestError as exc:
        source.unlink(missing_ok=True)
        st.error(f"This file cannot be used: {md(exc)}")
        return
    st.subheader("1. Columns")
    st.markdown(f"**The file's first {PREVIEW_ROWS} rows**, as read (text only)")
    _preview(source)
    st.caption("The mapping was detected automatically; change any of it before loading. Text may join several "
               "columns.")
    overrides = _mapping_editor(detected)
    dataset = st.text_input("Dataset name", value=_default_name(upload.name), key="upload_name")
    pseudonymise = st.checkbox(
        "Pseudonymise user ids", key="upload_pseudonymise",
        help="Store each user id as a keyed hash (the key is kept beside the database, not in it): analyses work "
             "the same, but the stored data cannot be joined back to the real ids without the key. The README "
             "says what this does not protect.")
    try:
        mapping = detected.with_overrides(overrides)
    except ValueError as exc:
        st.error(md(exc))
        return
    missing = mapping.missing()
    if missing:
        st.warning(f"Map these required fields before loading: {', '.join(missing)}.")
        return
    if not st.button("Load into the database", type="primary", key="upload_go"):
        if last is not None and last.get("file_id") == upload.file_id:
            _show_report(last)
        return
    st.subheader("2. Loading")
    bar = st.progress(0.0, text="Reading...")

    def progress(start: float, span: float) -> Callable[[float, str], None]:
        def report(share: float, message: str) -> None:
            bar.progress(min(max(start + span * float(share), 0.0), 1.0), text=message)

        return report

    release_store()
    try:
        with Store.open(Path(config.store.path), config=config) as store:
            key = load_or_create_key(key_path(config.store.path)) if pseudonymise else None
            report = ingest_file(store, source, config=config, mapping=mapping,
                                 dataset=dataset or _default_name(upload.name),
                                 progress=progress(0.0, 0.6), pseudonym_key=key)
            rejects = store.rejects(report.dataset_id) if report.rows_rejected else pd.DataFrame()
            scoring = _score_new_events(store, config, report.rows_stored, progress(0.6, 0.4))
    except (IngestError, PseudonymKeyError) as exc:
        bar.empty()
        st.error(f"This file cannot be used: {md(exc)}")
        return
    finally:
        source.unlink(missing_ok=True)  # loaded or refused, the server keeps no copy of the file
    bar.progress(1.0, text="Done.")
    release_store()
    st.session_state["upload_report"] = {"file_id": upload.file_id, "report": report.to_dict(), "rejects": rejects,
                                         "scoring": scoring}
    # Rerun so the sidebar's dataset filter lists the new dataset.
    st.rerun()


# Copies of uploads wait here between the upload and the load (DuckDB reads a file, not bytes).
UPLOAD_DIR = Path(tempfile.gettempdir()) / "interestgeo-uploads"
# A copy left by a session that never loaded its file is removed after this long.
STALE_UPLOAD_S = 6 * 3600


def upload_copy(file_id: str, name: str) -> Path:
    """Where an upload's copy is written: a folder only this user can read, a name made of the
    upload's id and a fixed suffix. The browser's file name never reaches the path (it could hold
    `../`, NUL or names of other files); gzip is recognised by its content, not its name."""
    UPLOAD_DIR.mkdir(mode=0o700, exist_ok=True)
    now = time.time()
    for old in UPLOAD_DIR.glob("upload-*"):
        try:
            if now - old.stat().st_mtime > STALE_UPLOAD_S:
                old.unlink()
        except OSError:  # another session removed it first
            pass
    safe_id = re.sub(r"[^A-Za-z0-9-]", "", str(file_id))[:64] or "file"
    return UPLOAD_DIR / f"upload-{safe_id}{'.csv.gz' if name.lower().endswith('.gz') else '.csv'}"


def _delete_dataset(config: Config) -> None:
    """For analysts: delete a dataset and everything derived from it (Store.delete_dataset, one
    transaction), logged in the audit log. In a form, so the confirmation box clears after."""
    deleted = st.session_state.pop("upload_deleted", None)
    if deleted is not None:
        st.success(f"Deleted dataset **{md(deleted)}** and everything derived from it.", icon=":material/delete:")
    if role(config) != "analyst" or not Path(config.store.path).exists() or TRAINING.locked():
        return
    names = datasets(db_path(config), config_key(config))["name"].astype(str).tolist()
    if not names:
        return
    with st.expander("Delete a dataset"), st.form("delete_dataset", clear_on_submit=True, border=False):
        name = st.selectbox("Dataset", names, index=None, key="delete_name", placeholder="Choose a dataset")
        sure = st.checkbox("Delete its events, rejected rows, aggregates, interest vectors and the model adapted to "
                           "it for good. Other checkpoints trained while it was loaded are kept: retrain to forget it "
                           "there too.", key="delete_sure")
        if not st.form_submit_button("Delete", type="primary", icon=":material/delete:"):
            return
    if not (name and sure):
        st.warning("Choose the dataset and tick the box to delete it.")
        return
    from interestgeo import audit

    release_store()  # the app's read-only handle: DuckDB has one writer
    with Store.open(Path(config.store.path), config=config) as store:
        dataset_id = store.dataset_id(str(name))
        if dataset_id is not None:
            store.delete_dataset(dataset_id)
    release_store()
    audit.record(audit.audit_path(config.store.path), "dataset_deleted", st.session_state.get(ACCOUNT_KEY),
                 dataset=str(name), via="dashboard")
    st.session_state["upload_deleted"] = str(name)
    st.rerun()  # from the top: the sidebar's dataset filter loses it


def _score_new_events(store: Store, config: Config, stored: int, progress: Callable[[float, str], None]) -> str:
    """Give the new events interest vectors with the source of the last score run (no retraining)."""
    if stored == 0:
        return ""
    encoder = text_encoder(config_key(config))  # the app's one text encoder
    try:
        source = last_run_source(store, config, encoder)
        if source is None:
            return f"Nothing was scored before, so the new events have no interest vectors yet: {SCORE_HINT}."
        result = score_store(store, config, source=source, encoder=encoder, update=True, progress=progress)
    except (LookupError, FileNotFoundError) as exc:
        return f"The new events could not be scored ({exc}); run `interestgeo score --since new`."
    quality = "".join(f" {line}." for line in result.quality_lines())
    return (f"Scored {result.events:,} events of {result.users:,} people with `{result.source}` in "
            f"{result.elapsed_s:.1f} s (no retraining).{quality}")


def _adapt(report: dict[str, object]) -> None:
    """For analysts, after a load: fine-tune the model on the new dataset (a time budget, early
    stopping on its own validation) and re-score it; one run at a time per server."""
    config = app_config()
    if role(config) != "analyst" or report.get("already_loaded") or not report.get("rows_stored"):
        return
    name = str(report["dataset"])
    adapted = st.session_state.get("upload_adapted")
    if adapted and adapted.get("dataset") == name:
        st.success(md(adapted["message"]), icon=":material/model_training:")
        return
    st.subheader("3. Adapt the model to this data")
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    minutes = left.number_input("Minutes", min_value=1, max_value=30, value=5, key="adapt_minutes",
                                help="Time budget; training also stops when this data's own validation stops improving.")
    right.caption("Fine-tunes the shared model on this dataset alone and re-scores it with the result (the other "
                  "datasets keep theirs). Every page waits while it runs: the database is open for writing.")
    if not st.button("Adapt the model to this data", key="adapt_go", icon=":material/model_training:"):
        return
    if not TRAINING.acquire(blocking=False):
        st.info("A training run is already in progress; try again when it is done.")
        return
    from interestgeo.vectors import adapt_to_dataset

    bar = st.progress(0.0, text="Preparing the data (text embeddings, split)...")
    started = pd.Timestamp.now()

    def log(message: str) -> None:
        spent = (pd.Timestamp.now() - started).total_seconds() / 60.0
        bar.progress(min(spent / float(minutes), 0.95), text=message)

    try:
        release_store()
        with Store.open(Path(config.store.path), config=config) as store:
            checkpoint, result = adapt_to_dataset(
                store, config, name, minutes=float(minutes), encoder=text_encoder(config_key(config)), log=log,
            )
    except LookupError as exc:
        bar.empty()
        st.error(f"The model could not be adapted: {md(exc)}")
        return
    finally:
        TRAINING.release()
        release_store()
    bar.progress(1.0, text="Done.")
    quality = " ".join(result.quality_lines())
    st.session_state["upload_adapted"] = {
        "dataset": name, "message": f"Checkpoint {checkpoint} is adapted to {name} and scored its "
        f"{result.events:,} events. {quality}",
    }
    st.rerun()


def _preview(source: Path) -> None:
    """The first rows as raw strings: what each column holds, before any parsing or mapping."""
    try:
        fmt = detect_format(source)
        rows = pd.read_csv(source, sep=fmt.delimiter, encoding=fmt.encoding, dtype=str, keep_default_na=False,
                           nrows=PREVIEW_ROWS, compression="gzip" if fmt.compression == "gzip" else None,
                           engine="python", on_bad_lines="skip")
    except (IngestError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        st.caption(f"No preview: {md(exc)}")
        return
    st.dataframe(rows, hide_index=True, width="stretch", height=36 * (len(rows) + 1) + 2,
                 column_config={c: st.column_config.TextColumn() for c in rows.columns})


def _mapping_editor(detected: object) -> dict[str, str]:
    columns = list(getattr(detected, "source_columns"))
    options = [NOT_MAPPED, *columns]
    overrides: dict[str, str] = {}
    grid = st.columns(3)
    for i, name in enumerate(SINGLE_FIELDS):
        current = getattr(detected, name)
        choice = grid[i % 3].selectbox(
            name, options, index=options.index(current) if current in options else 0, key=f"map_{name}",
            help=FIELD_HELP[name],
        )
        overrides[name] = "" if choice == NOT_MAPPED else str(choice)
    text = st.multiselect(
        "text (required): joined with \", \" in this order", columns,
        default=[c for c in getattr(detected, "text") if c in columns], key="map_text",
    )
    overrides["text"] = "+".join(text)
    return overrides


def _default_name(filename: str) -> str:
    name = Path(filename).name
    for suffix in (".gz", ".csv", ".tsv", ".txt"):
        name = name.removesuffix(suffix)
    return name or "upload"


def _show_report(last: dict[str, object]) -> None:
    report = dict(last["report"])  # type: ignore[arg-type]
    st.subheader("Validation report")
    if report.get("already_loaded"):
        st.info(f"This file was loaded before as dataset **{md(report['dataset'])}**; nothing was added.")
    cols = st.columns(4)
    cols[0].metric("Rows read", f"{report['rows_read']:,}")
    cols[1].metric("Rows stored", f"{report['rows_stored']:,}")
    cols[2].metric("Rows rejected", f"{report['rows_rejected']:,}")
    cols[3].metric("Duplicates skipped", f"{report['duplicates_skipped']:,}")
    st.caption(
        f"Dataset **{md(report['dataset'])}** · {float(report['elapsed_s']):.1f} s · "
        f"{float(report['events_per_s']):,.0f} events/s. It is now in the sidebar's dataset filter."
    )
    if last.get("scoring"):
        st.caption(md(last["scoring"]))
    _adapt(report)
    rejects = last.get("rejects")
    if isinstance(rejects, pd.DataFrame) and not rejects.empty:
        st.markdown("**Rejected rows** (line number in the file, reason, the raw line)")
        reasons = rejects.groupby("reason").size().rename("rows").reset_index().sort_values("rows", ascending=False)
        st.dataframe(reasons, hide_index=True, width="stretch")
        if role(app_config()) != "analyst":
            # a raw line is one person's event, user id and all
            st.caption("The rejected lines themselves hold user ids: analysts see them.")
            return
        st.dataframe(rejects.head(200), hide_index=True, width="stretch")
        csv_download(rejects, f"rejects-{report['dataset']}", label="Download all rejected rows")


run_page(page)
