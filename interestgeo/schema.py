"""The canonical event, how source CSV columns map onto it, and the rules a row must pass.

One module owns "what an event is" so that ingest, the store and every consumer agree:

    user_id   str        who (scoped to its dataset: users are (dataset_id, user_id))
    ts        UTC instant
    lat, lon  WGS84 degrees
    text      what the event is about (venue name + category, a product title, a query...)
    item_id, category, category_path, event_type   optional strings
    tz_offset_min   the local-time offset in minutes when known; time-of-day features and time
                    windows use local time (a 9 pm check-in is an evening one wherever it happens)

Column detection works on normalised header names (lower case, only letters and digits), so
`userId`, `user_id` and `User ID` all match the alias `userid`. Detection is deliberately a
plain alias table: predictable, explainable on the Upload page, and overridable with an
explicit mapping (`--map text=venue_name+venue_category`).

Timestamps (parsed in SQL by store/ingest_session.py, tried in this order):
    ISO 8601                       `2012-04-03T18:00:09Z`, `2012-04-03 18:00:09+02:00`, fractional
                                   seconds, a bare date; without an offset the time is taken as UTC
    epoch seconds / milliseconds   a plain number; >= 1e11 means milliseconds (1e11 s is the
                                   year 5138, 1e11 ms is 1973, so the two ranges cannot be confused
                                   for plausible dates)
    Foursquare dump                `Tue Apr 03 18:00:09 +0000 2012`
A timestamp is plausible from 1990-01-01 UTC to one day after the ingest time.
Coordinates are decimal degrees; in a semicolon-separated file a decimal comma (40,7128) is read
as the decimal point it is there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone

import numpy as np
import pandas as pd

__all__ = [
    "ColumnMapping",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "MAPPABLE_FIELDS",
    "Reason",
    "TS_MIN",
    "TS_FUTURE_SLACK_DAYS",
    "EPOCH_MS_THRESHOLD",
    "FOURSQUARE_TS_FORMAT",
    "MAX_TZ_OFFSET_MIN",
    "detect_mapping",
    "normalise_name",
    "user_keys",
    "user_key_columns",
]

REQUIRED_FIELDS = ("user_id", "ts", "lat", "lon", "text")
OPTIONAL_FIELDS = ("tz_offset_min", "item_id", "category", "category_path", "event_type")
MAPPABLE_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS

# Plausible timestamps: nothing in location data predates 1990; a day of slack for clock skew.
TS_MIN = datetime(1990, 1, 1, tzinfo=timezone.utc)
TS_FUTURE_SLACK_DAYS = 1
EPOCH_MS_THRESHOLD = 100_000_000_000
FOURSQUARE_TS_FORMAT = "%a %b %d %H:%M:%S %z %Y"
# Real UTC offsets run from -12:00 to +14:00.
MAX_TZ_OFFSET_MIN = 840


class Reason:
    """The exact reject reasons (shown to users and asserted by the tests).

    A row with several problems gets the first one in this order: structure (column count,
    quoting), empty user, empty text, timestamp (unparseable, implausible), unparseable latitude,
    unparseable longitude, latitude range, longitude range, (0, 0), tz offset. NaN and infinite
    coordinates count as out of range.
    """

    EMPTY_USER = "empty user_id"
    EMPTY_TEXT = "empty text"
    BAD_TS = "unparseable timestamp"
    IMPLAUSIBLE_TS = "implausible timestamp (before 1990 or more than 1 day in the future)"
    BAD_LAT = "unparseable latitude"
    BAD_LON = "unparseable longitude"
    LAT_RANGE = "latitude out of range [-90, 90]"
    LON_RANGE = "longitude out of range [-180, 180]"
    NULL_ISLAND = "coordinates are (0, 0)"
    BAD_TZ = "unparseable tz offset"
    TZ_RANGE = "tz offset out of range [-840, 840] minutes"
    UNTERMINATED_QUOTE = "unterminated quote"
    BAD_ENCODING = "invalid character encoding"

    @staticmethod
    def column_count(expected: int, found: int) -> str:
        return f"wrong number of columns: expected {expected}, found {found}"


# Normalised alias -> canonical field. Order inside each tuple is priority.
_ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": ("userid", "user", "uid", "username", "userkey", "customerid", "deviceid", "personid"),
    "ts": (
        "utctimestamp", "utctime", "timestamp", "ts", "datetime", "time", "date", "eventtime",
        "createdat", "checkintime", "localtime",
    ),
    "lat": ("latitude", "lat", "y"),
    "lon": ("longitude", "lng", "lon", "long", "x"),
    "tz_offset_min": ("timezoneoffset", "tzoffsetmin", "tzoffset", "utcoffset", "timezoneoffsetmin"),
    "item_id": ("venueid", "itemid", "poiid", "placeid", "productid", "locationid"),
    "category": ("venuecategory", "category", "venuecategoryname", "categoryname", "type"),
    "category_path": ("categorypath", "venuecategorypath"),
    "event_type": ("eventtype", "action", "event"),
}
# Columns that make good text, in priority order; the category joins them (see detect_mapping).
_TEXT_ALIASES = ("text", "venuename", "title", "name", "placename", "poiname", "query", "description")


def normalise_name(name: str) -> str:
    """`User ID` / `userId` / `user_id` -> `userid` (BOM and surrounding quotes already gone)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column feeds which canonical field (None: absent); `text` may join several.

    Composed text joins the non-empty parts with ", ", so name + category gives
    "Starbucks, Coffee Shop", or just "Coffee Shop" when the name is empty.
    """

    user_id: str | None = None
    ts: str | None = None
    lat: str | None = None
    lon: str | None = None
    tz_offset_min: str | None = None
    item_id: str | None = None
    category: str | None = None
    category_path: str | None = None
    event_type: str | None = None
    text: tuple[str, ...] = ()
    source_columns: list[str] = field(default_factory=list)

    def missing(self) -> list[str]:
        """Required canonical fields with no source column."""
        return [f for f in REQUIRED_FIELDS if not (self.text if f == "text" else getattr(self, f))]

    def with_overrides(self, overrides: list[str] | dict[str, str]) -> ColumnMapping:
        """Apply `field=column` overrides (`text=a+b` joins columns; an empty value unmaps a field).

        Raises ValueError with a one-line message for unknown fields or columns.
        """
        items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        changes: dict[str, object] = {}
        for name, value in items:
            if name not in MAPPABLE_FIELDS:
                raise ValueError(f"unknown field {name!r} in mapping (fields: {', '.join(MAPPABLE_FIELDS)})")
            columns = [c for c in value.split("+") if c] if name == "text" else ([value] if value else [])
            for column in columns:
                if self.source_columns and column not in self.source_columns:
                    raise ValueError(
                        f"mapping {name}={value}: no column {column!r} (columns: {', '.join(self.source_columns)})"
                    )
            changes[name] = tuple(columns) if name == "text" else (columns[0] if columns else None)
        return replace(self, **changes)

    def used_columns(self) -> dict[str, tuple[str, ...]]:
        """Canonical field -> source columns, for the fields that are mapped."""
        out: dict[str, tuple[str, ...]] = {}
        for f in fields(self):
            if f.name == "source_columns":
                continue
            value = getattr(self, f.name)
            if value:
                out[f.name] = value if isinstance(value, tuple) else (value,)
        return out

    def to_dict(self) -> dict[str, object]:
        """The mapped fields only, JSON-ready (text as a list); stored with each dataset."""
        return {k: list(v) if k == "text" else v[0] for k, v in self.used_columns().items()}


def _split_override(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"mapping {item!r} must look like field=column (text=col1+col2)")
    return name.strip(), value.strip()


def detect_mapping(columns: list[str]) -> ColumnMapping:
    """Map header names onto canonical fields by the alias table (first match by priority wins)."""
    by_norm: dict[str, str] = {}
    for column in columns:
        by_norm.setdefault(normalise_name(column), column)
    taken: set[str] = set()
    found: dict[str, str | None] = {}
    for canonical, aliases in _ALIASES.items():
        found[canonical] = None
        for alias in aliases:
            column = by_norm.get(alias)
            if column is not None and column not in taken:
                found[canonical] = column
                taken.add(column)
                break
    text_cols: list[str] = []
    for alias in _TEXT_ALIASES:
        column = by_norm.get(alias)
        if column is not None and column not in taken:
            text_cols.append(column)
            break
    if found["category"]:
        text_cols.append(found["category"])
    return ColumnMapping(**found, text=tuple(text_cols), source_columns=list(columns))


# ---------------------------------------------------------------------------- the user key

# A user is (dataset_id, user_id): user ids are scoped to their dataset. Joined into one string
# "dataset_id:user_id" wherever users are grouped, compared or factorised in one pandas pass; the
# dataset id (an integer) never holds ":", so the first ":" splits a key back.
USER_KEY_SEPARATOR = ":"


def user_keys(events: pd.DataFrame) -> pd.Series:
    """(N,) object "dataset_id:user_id" of each row of a frame with those two columns."""
    return events["dataset_id"].astype(str) + USER_KEY_SEPARATOR + events["user_id"].astype(str)


def user_key_columns(keys: pd.Series) -> pd.DataFrame:
    """Keys from `user_keys` -> columns dataset_id (int64) and user_id (str), index kept."""
    parts = keys.str.split(USER_KEY_SEPARATOR, n=1, expand=True) if len(keys) else pd.DataFrame({0: [], 1: []})
    return pd.DataFrame({"dataset_id": parts[0].astype(np.int64), "user_id": parts[1].astype(str)})
