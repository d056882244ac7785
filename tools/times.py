"""The product's one set of time conversions. Investigation databases store naive UTC
timestamps; everything shown or written is ISO 8601 with a `Z`."""

from datetime import UTC, datetime

import pandas as pd

ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


def naive_utc(value) -> pd.Timestamp:
    """Any instant (ISO text in any zone, naive = UTC, a datetime or a Timestamp) as a naive UTC
    Timestamp, the form the investigation database stores."""
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def iso_utc(value) -> str:
    """Any instant as `YYYY-MM-DDTHH:MM:SSZ`."""
    return naive_utc(value).strftime(ISO_SECONDS)


def parse_utc(iso: str) -> datetime:
    """Parse an ISO 8601 instant (``Z``, offset or naive-as-UTC) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def utc_now_iso(precise: bool = False) -> str:
    """Now, in UTC: to the second for people, to the microsecond for ordering records."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise else ISO_SECONDS)
