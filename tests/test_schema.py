"""Column detection and explicit mappings (schema.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interestgeo.schema import ColumnMapping, detect_mapping, normalise_name, user_key_columns, user_keys

NYC = ["user_id", "venue_id", "venue_name", "venue_category", "category_path", "latitude", "longitude",
       "utc_time", "tz_offset_min"]
FOURSQUARE_RAW = ["userId", "venueId", "venueCategoryId", "venueCategory", "latitude", "longitude",
                  "timezoneOffset", "utcTimestamp"]


def test_nyc_demo_header_maps_to_the_contract() -> None:
    m = detect_mapping(NYC)
    assert (m.user_id, m.ts, m.lat, m.lon, m.tz_offset_min) == ("user_id", "utc_time", "latitude", "longitude",
                                                                "tz_offset_min")
    assert (m.item_id, m.category, m.category_path) == ("venue_id", "venue_category", "category_path")
    assert m.text == ("venue_name", "venue_category")
    assert m.source_columns == NYC
    assert m.missing() == []


def test_foursquare_raw_header_uses_category_as_text() -> None:
    m = detect_mapping(FOURSQUARE_RAW)
    assert (m.user_id, m.ts, m.tz_offset_min, m.item_id) == ("userId", "utcTimestamp", "timezoneOffset", "venueId")
    assert m.category == "venueCategory"
    assert m.text == ("venueCategory",)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["user", "lat", "lng", "timestamp", "title"], ("user", "timestamp", "lat", "lng", ("title",))),
        (["User ID", "Latitude", "Lon", "Time", "Text"], ("User ID", "Time", "Latitude", "Lon", ("Text",))),
        (["uid", "y", "x", "date", "name", "type"], ("uid", "date", "y", "x", ("name", "type"))),
    ],
)
def test_common_aliases(columns: list[str], expected: tuple) -> None:
    m = detect_mapping(columns)
    assert (m.user_id, m.ts, m.lat, m.lon, m.text) == expected


def test_missing_required_fields_are_listed() -> None:
    m = detect_mapping(["user_id", "utc_time", "comment"])
    assert m.missing() == ["lat", "lon", "text"]


def test_normalise_name() -> None:
    assert normalise_name("User ID") == normalise_name("userId") == normalise_name("user_id") == "userid"


def test_overrides_compose_text_and_unmap() -> None:
    m = detect_mapping(NYC).with_overrides(["text=venue_category", "category_path="])
    assert m.text == ("venue_category",)
    assert m.category_path is None
    m = m.with_overrides({"text": "venue_name+venue_id"})
    assert m.text == ("venue_name", "venue_id")


@pytest.mark.parametrize(
    ("override", "message"),
    [("colour=venue_name", "unknown field"), ("text=nope", "no column 'nope'"), ("text", "field=column")],
)
def test_bad_overrides_raise_one_line_value_errors(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_mapping(NYC).with_overrides([override])


def test_to_dict_lists_only_mapped_fields() -> None:
    d = ColumnMapping(user_id="u", ts="t", lat="a", lon="b", text=("x", "y")).to_dict()
    assert d == {"user_id": "u", "ts": "t", "lat": "a", "lon": "b", "text": ["x", "y"]}


def test_user_keys_join_dataset_and_user_and_split_back_at_the_first_colon():
    events = pd.DataFrame({"dataset_id": np.array([1, 12, 1], dtype=np.int32), "user_id": ["a", "b:c", "7"]})
    keys = user_keys(events)
    assert keys.tolist() == ["1:a", "12:b:c", "1:7"]
    back = user_key_columns(keys)
    assert back["dataset_id"].tolist() == [1, 12, 1] and back["user_id"].tolist() == ["a", "b:c", "7"]
    assert list(user_key_columns(keys.iloc[:0]).columns) == ["dataset_id", "user_id"]
