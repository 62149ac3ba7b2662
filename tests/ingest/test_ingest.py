"""CSV ingest: formats, column detection, exact rejects, de-duplication, idempotence, atomicity."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestgeo.config import Config
from interestgeo.ingest import IngestError, detect_columns, detect_format, ingest_file
from interestgeo.schema import EPOCH_MS_THRESHOLD, TS_MIN, Reason
from interestgeo.store import Store

BAD_ROWS_EXPECTED = [
    (3, Reason.EMPTY_USER),
    (4, Reason.EMPTY_TEXT),
    (5, Reason.BAD_TS),
    (6, Reason.IMPLAUSIBLE_TS),
    (7, Reason.IMPLAUSIBLE_TS),
    (8, Reason.BAD_LAT),
    (9, Reason.BAD_LON),
    (10, Reason.LAT_RANGE),
    (11, Reason.LON_RANGE),
    (12, Reason.NULL_ISLAND),
    (13, Reason.BAD_TZ),
    (14, Reason.TZ_RANGE),
    (15, Reason.LAT_RANGE),
    (18, Reason.EMPTY_USER),
    (19, Reason.column_count(8, 9)),
    (20, Reason.column_count(8, 6)),
]


def _counts_add_up(report) -> None:
    assert report.rows_stored + report.rows_rejected + report.duplicates_skipped == report.rows_read


def test_bad_rows_are_rejected_with_exact_physical_lines_and_reasons(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path
) -> None:
    path = fixtures_dir / "bad" / "bad_rows.csv"
    report = ingest_file(tmp_store, path, config=tmp_config)
    rejects = tmp_store.rejects(report.dataset_id)
    assert list(zip(rejects["line"], rejects["reason"], strict=True)) == BAD_ROWS_EXPECTED
    lines = path.read_text(encoding="utf-8").splitlines()
    assert rejects["raw"].tolist() == [lines[n - 1] for n, _ in BAD_ROWS_EXPECTED]
    assert (report.rows_read, report.rows_stored, report.duplicates_skipped) == (20, 3, 1)
    assert [(r.line, r.reason) for r in report.rejects] == BAD_ROWS_EXPECTED
    _counts_add_up(report)
    events = tmp_store.events()
    assert sorted(events["user_id"]) == ["u1", "u1", "u16"]


def test_multiline_records_blank_lines_and_crlf_keep_physical_line_numbers(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path
) -> None:
    report = ingest_file(tmp_store, fixtures_dir / "bad" / "multiline_crlf.csv", config=tmp_config)
    rejects = tmp_store.rejects(report.dataset_id)
    assert list(zip(rejects["line"], rejects["reason"], strict=True)) == [
        (5, Reason.BAD_TS),
        (9, Reason.column_count(8, 6)),
        (10, Reason.LAT_RANGE),
    ]
    assert rejects["raw"].iloc[2] == 'u5,v5,"Multi\r\nline",Bar,95,-73.9,2012-04-03T18:00:09Z,-240'
    texts = tmp_store.events()["text"].tolist()
    # Quoted line breaks are part of the text and kept exactly.
    assert texts == ["Joe's\r\nCoffee, Coffee Shop", "Line one\r\nline two\r\nline three, Bar", "Deli, Deli"]
    _counts_add_up(report)


def test_unterminated_quote_is_one_reject_at_its_first_line(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path
) -> None:
    report = ingest_file(tmp_store, fixtures_dir / "bad" / "unterminated_quote.csv", config=tmp_config)
    rejects = tmp_store.rejects(report.dataset_id)
    assert list(zip(rejects["line"], rejects["reason"], strict=True)) == [(3, Reason.UNTERMINATED_QUOTE)]
    assert report.rows_stored == 1


def test_every_timestamp_format(tmp_store: Store, tmp_config: Config, fixtures_dir: Path) -> None:
    report = ingest_file(tmp_store, fixtures_dir / "timestamps.csv", config=tmp_config)
    assert report.rows_rejected == 0
    events = tmp_store.events().set_index("user_id")
    whole = pd.Timestamp("2012-04-03T18:00:09Z")
    fractional = whole + pd.Timedelta(milliseconds=250)
    expected = {u: whole for u in "abcdefgh"} | {"i": fractional, "j": fractional}
    assert events["ts"].to_dict() == expected


def test_epoch_numbers_at_the_seconds_milliseconds_boundary(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    # Numbers below EPOCH_MS_THRESHOLD are seconds, from it on milliseconds. The threshold sits where
    # neither reading is a plausible time (seconds: year ~5138; milliseconds: 1973, before TS_MIN),
    # so a number on either side of it is rejected as implausible, never read in the wrong unit.
    assert pd.Timestamp(EPOCH_MS_THRESHOLD, unit="ms", tz="UTC") < TS_MIN
    assert 1970 + (EPOCH_MS_THRESHOLD - 1) / (365.25 * 86_400) > 5000  # as seconds: past any "now"
    seconds = 1_333_476_009  # 2012-04-03T18:00:09Z
    rows = [f"a,40.7,-73.9,{seconds},seconds", f"b,40.7,-73.9,{seconds * 1000},milliseconds",
            f"c,40.7,-73.9,{EPOCH_MS_THRESHOLD - 1},last seconds number",
            f"d,40.7,-73.9,{EPOCH_MS_THRESHOLD},first milliseconds number"]
    path = tmp_path / "epochs.csv"
    path.write_text("user,lat,lon,time,text\n" + "\n".join(rows) + "\n")
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert [(r.line, r.reason) for r in report.rejects] == [(4, Reason.IMPLAUSIBLE_TS), (5, Reason.IMPLAUSIBLE_TS)]
    assert tmp_store.events()["ts"].tolist() == [pd.Timestamp("2012-04-03T18:00:09Z")] * 2


def test_implausible_future_is_relative_to_now(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    now = pd.Timestamp.now(tz="UTC")
    soon = (now + pd.Timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = (now + pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "future.csv"
    path.write_text(f"user,lat,lon,time,text\na,40.7,-73.9,{soon},ok\nb,40.7,-73.9,{late},too late\n")
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert [(r.line, r.reason) for r in report.rejects] == [(3, Reason.IMPLAUSIBLE_TS)]


def test_latin1_file_is_decoded(tmp_store: Store, tmp_config: Config, fixtures_dir: Path) -> None:
    report = ingest_file(tmp_store, fixtures_dir / "latin1.csv", config=tmp_config)
    assert report.encoding == "latin-1"
    assert tmp_store.events()["text"].tolist() == ["Café Olé, Café", "Crème brûlée, Bakery"]


def test_semicolon_bom_crlf_decimal_comma_and_foursquare_time(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path
) -> None:
    path = fixtures_dir / "semicolon_bom_crlf.csv"
    fmt = detect_format(path)
    assert (fmt.delimiter, fmt.columns[0]) == (";", "userId")
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert report.rows_stored == 1
    event = tmp_store.events().iloc[0]
    assert (event["user_id"], event["lat"], event["lon"], event["text"]) == ("470", 40.1, -74.0, "Arts & Crafts Store")
    assert event["local_ts"] == pd.Timestamp("2012-04-03 14:00:09")


def test_gzip_tab_separated_foursquare_dump(tmp_store: Store, tmp_config: Config, fixtures_dir: Path) -> None:
    path = fixtures_dir / "foursquare_raw.tsv.gz"
    assert detect_format(path).compression == "gzip"
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert (report.rows_stored, report.delimiter) == (2, "\t")
    events = tmp_store.events()
    assert events["item_id"].tolist() == ["v1", "v2"]
    assert events["category"].tolist() == ["Arts & Crafts Store", "Bridge"]


def test_chinese_emoji_and_html_text_is_stored_exactly(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path
) -> None:
    ingest_file(tmp_store, fixtures_dir / "unicode.csv", config=tmp_config)
    assert tmp_store.events()["text"].tolist() == [
        "北京咖啡馆",
        "🍕 Pizza 🎉",
        "<script>alert('x')</script> &amp; <b>bold</b>",
        "مقهى",
        '  spaces kept, "quoted"  ',
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.csv", "empty.csv: the file is empty"),
        ("header_only.csv", "header_only.csv: no data rows after the header"),
        ("no_location.csv", "no_location.csv: no usable lat/lon column"),
        ("binary.csv", "binary.csv: not a CSV (binary data)"),
        ("damaged.csv.gz", "damaged.csv.gz: damaged gzip file"),
        ("one_column.csv", "one_column.csv: not a CSV with a header row"),
        ("missing.csv", "missing.csv: no such file"),
    ],
)
def test_unusable_files_raise_one_line_errors_and_store_nothing(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path, name: str, message: str
) -> None:
    with pytest.raises(IngestError) as info:
        ingest_file(tmp_store, fixtures_dir / "unusable" / name, config=tmp_config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert tmp_store.datasets().empty


def test_size_limit(tmp_store: Store, tmp_config: Config, demo_sample_csv: Path) -> None:
    small = dataclasses.replace(tmp_config, store=dataclasses.replace(tmp_config.store, max_file_bytes=1000))
    with pytest.raises(IngestError, match="over the"):
        ingest_file(tmp_store, demo_sample_csv, config=small)


def test_reingesting_the_same_content_adds_nothing(
    tmp_store: Store, tmp_config: Config, demo_sample_csv: Path, tmp_path: Path
) -> None:
    first = ingest_file(tmp_store, demo_sample_csv, config=tmp_config)
    assert not first.already_loaded and first.rows_stored > 0
    before = (tmp_store.events(), tmp_store.datasets())
    copy = tmp_path / "renamed.csv"
    shutil.copy(demo_sample_csv, copy)
    for path, dataset in ((demo_sample_csv, None), (copy, "another name")):
        again = ingest_file(tmp_store, path, config=tmp_config, dataset=dataset)
        assert again.already_loaded
        assert (again.dataset_id, again.rows_stored) == (first.dataset_id, 0)
    pd.testing.assert_frame_equal(tmp_store.events(), before[0])
    pd.testing.assert_frame_equal(tmp_store.datasets(), before[1])


def test_dataset_names_default_to_the_file_and_stay_unique(
    tmp_store: Store, tmp_config: Config, demo_sample_csv: Path, tmp_path: Path
) -> None:
    lines = demo_sample_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    other = tmp_path / "nyc_sample.csv"
    other.write_text("".join(lines[:50]), encoding="utf-8")
    a = ingest_file(tmp_store, demo_sample_csv, config=tmp_config)
    b = ingest_file(tmp_store, other, config=tmp_config)
    assert (a.dataset, b.dataset) == ("nyc_sample", "nyc_sample-2")
    third = tmp_path / "third.csv"
    third.write_text("".join(lines[:20]), encoding="utf-8")
    with pytest.raises(IngestError, match="already used"):
        ingest_file(tmp_store, third, config=tmp_config, dataset="nyc_sample")


class _Boom(Exception):
    pass


@pytest.mark.parametrize("fail_at", ["storing events", "aggregating cells and windows", "done"])
def test_a_failure_part_way_leaves_no_trace(
    tmp_store: Store, tmp_config: Config, fixtures_dir: Path, demo_sample_csv: Path, fail_at: str
) -> None:
    ingest_file(tmp_store, demo_sample_csv, config=tmp_config)
    tables = ("events", "datasets", "rejects", "cell_windows")
    before = {t: tmp_store.con.execute(f"SELECT count(*) FROM {t}").fetchall() for t in tables}

    def progress(fraction: float, message: str) -> None:
        if message == fail_at:
            raise _Boom(message)

    with pytest.raises(_Boom):
        ingest_file(tmp_store, fixtures_dir / "bad" / "bad_rows.csv", config=tmp_config, progress=progress)
    assert {t: tmp_store.con.execute(f"SELECT count(*) FROM {t}").fetchall() for t in tables} == before
    # The ingest session's temp tables and registered frames are gone too (store/ingest_session.py).
    assert tmp_store.con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
    ).fetchall() == []
    # The store is still usable and the same file loads normally afterwards.
    report = ingest_file(tmp_store, fixtures_dir / "bad" / "bad_rows.csv", config=tmp_config)
    assert report.rows_rejected == len(BAD_ROWS_EXPECTED)


def test_detect_columns_of_the_demo_sample(demo_sample_csv: Path) -> None:
    m = detect_columns(demo_sample_csv)
    assert m.text == ("venue_name", "venue_category")
    assert (m.item_id, m.category, m.category_path) == ("venue_id", "venue_category", "category_path")


def test_explicit_mapping_composes_text(tmp_store: Store, tmp_config: Config, demo_sample_csv: Path) -> None:
    mapping = detect_columns(demo_sample_csv).with_overrides(["text=venue_category+venue_id"])
    ingest_file(tmp_store, demo_sample_csv, config=tmp_config, mapping=mapping)
    raw = pd.read_csv(demo_sample_csv, dtype=str)
    expected = (raw["venue_category"] + ", " + raw["venue_id"]).tolist()
    assert sorted(tmp_store.events()["text"]) == sorted(expected)


def test_text_parts_are_trimmed_and_blank_parts_skipped(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "parts.csv"
    rows = [("  Joe's  ", "Café"), ("   ", "Bar"), ("Park", ""), ("", "  "), ("Deli", " Bodega"), ("Tab\t", "x ")]
    path.write_text("user,time,lat,lon,name,category\n"
                    + "".join(f"u,2012-04-0{i + 1}T10:00:00Z,40.7,-73.9,{n},{c}\n" for i, (n, c) in enumerate(rows)),
                    encoding="utf-8")
    mapping = detect_columns(path).with_overrides(["text=name+category"])
    report = ingest_file(tmp_store, path, config=tmp_config, mapping=mapping)
    assert [(r.line, r.reason) for r in report.rejects] == [(5, Reason.EMPTY_TEXT)]
    assert tmp_store.events()["text"].tolist() == ["Joe's, Café", "Bar", "Park", "Deli, Bodega", "Tab\t, x"]
    # One text column: kept exactly as written, but blank (spaces only) is still empty.
    single = tmp_path / "single.csv"
    single.write_text("user,time,lat,lon,text\nu,2012-04-01T10:00:00Z,40.7,-73.9, padded \n"
                      "u,2012-04-02T10:00:00Z,40.7,-73.9,   \n", encoding="utf-8")
    report = ingest_file(tmp_store, single, config=tmp_config)
    assert [(r.line, r.reason) for r in report.rejects] == [(3, Reason.EMPTY_TEXT)]
    assert tmp_store.events([report.dataset_id])["text"].tolist() == [" padded "]


def test_demo_text_rule_and_local_time(sample_store: Store, demo_sample_csv: Path) -> None:
    raw = pd.read_csv(demo_sample_csv, dtype=str, keep_default_na=False)
    name, category = raw["venue_name"], raw["venue_category"]
    expected_text = np.where(name == "", category, name + ", " + category)
    events = sample_store.events().sort_values("event_id")
    assert events["text"].tolist() == list(expected_text)
    offsets = pd.to_timedelta(raw["tz_offset_min"].astype(int), unit="min")
    utc = pd.to_datetime(raw["utc_time"], utc=True)
    assert events["local_ts"].tolist() == (utc.dt.tz_localize(None) + offsets).tolist()
    assert events["local_hour"].tolist() == (utc.dt.tz_localize(None) + offsets).dt.hour.tolist()
    assert events["dow"].tolist() == (utc.dt.tz_localize(None) + offsets).dt.day_of_week.tolist()


@pytest.mark.slow  # writes and ingests 300,000 rows
def test_line_numbers_stay_exact_across_row_groups(tmp_store: Store, tmp_config: Config, tmp_path: Path) -> None:
    # 300k records span several DuckDB row groups (122,880 rows) and parallel read chunks;
    # a wrong record order would shift these line numbers.
    n = 300_000
    bad = {1_000: "north", 150_000: "", 299_990: "north"}
    lat = np.full(n, "40.7", dtype=object)
    for index, value in bad.items():
        lat[index] = value
    frame = pd.DataFrame({"user": np.arange(n) % 997, "lat": lat, "lon": "-73.9",
                          "ts": 1333476009 + np.arange(n), "text": "x"})
    path = tmp_path / "big.csv"  # uncompressed: DuckDB reads it with parallel scanners
    frame.to_csv(path, index=False)
    report = ingest_file(tmp_store, path, config=tmp_config)
    assert [(r.line, r.reason) for r in report.rejects] == [
        (1_002, Reason.BAD_LAT), (150_002, Reason.BAD_LAT), (299_992, Reason.BAD_LAT)
    ]
    assert report.rows_stored == n - 3
    assert tmp_store.events()["event_id"].is_unique
