"""TimeSpan text as SSIS writes it in WorkerSettings.config, read and written back."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from packfleet.config import format_timespan, parse_timespan
from packfleet.errors import SettingsError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("00:01:00", timedelta(minutes=1)),
        ("00:00:10", timedelta(seconds=10)),
        ("00:10:00", timedelta(minutes=10)),
        ("7.00:00:00", timedelta(days=7)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("00:00:00.5000000", timedelta(milliseconds=500)),
        ("00:00:00.0000010", timedelta(microseconds=1)),
        ("123.23:59:59.9999990", timedelta(days=123, hours=23, minutes=59, seconds=59, microseconds=999_999)),
        ("-00:00:30", timedelta(seconds=-30)),
        ("-1.02:03:04.2500000", -timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=250)),
    ],
)
def test_canonical_text_round_trips(text: str, value: timedelta) -> None:
    assert parse_timespan(text) == value
    assert format_timespan(value) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("01:30", timedelta(hours=1, minutes=30)),  # TimeSpan.Parse reads hh:mm
        ("0:1:0", timedelta(minutes=1)),
        ("  00:01:00 ", timedelta(minutes=1)),
        ("00:00:00.5", timedelta(milliseconds=500)),
        ("00:00:01.1234567", timedelta(seconds=1, microseconds=123_457)),  # 7th digit rounds
        ("00:00:00.9999996", timedelta(seconds=1)),  # ...and carries into the seconds
        ("0.00:00:05", timedelta(seconds=5)),
    ],
)
def test_other_spellings_net_accepts(text: str, value: timedelta) -> None:
    assert parse_timespan(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 minute",
        "60",
        "PT1M",
        "24:00:00",
        "00:60:00",
        "00:00:60",
        "1:2:3:4",
        "1.2.00:00:00",
        "00:00:00.12345678",
        "00:01:00-",
        "+00:01:00",
        "٠٠:٠١:٠٠",  # Arabic-Indic digits: \d would take them without re.ASCII
    ],
)
def test_malformed_text_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(SettingsError, match="expected|TimeSpan") as caught:
        parse_timespan(text)
    assert "like 00:01:00 or 7.00:00:00" in caught.value.message
    assert repr(text) in caught.value.message


def test_out_of_range_units_explain_how_to_write_a_day() -> None:
    with pytest.raises(SettingsError, match=r"write 1\.00:00:00 for a day"):
        parse_timespan("24:00:00")


def test_format_of_whole_and_negative_values() -> None:
    assert format_timespan(timedelta(0)) == "00:00:00"
    assert format_timespan(timedelta(hours=36)) == "1.12:00:00"
    assert format_timespan(timedelta(microseconds=-1)) == "-00:00:00.0000010"


def test_any_microsecond_value_round_trips() -> None:
    rng = random.Random(8391)
    for _ in range(2000):
        value = timedelta(microseconds=rng.randint(-(10**15), 10**15))
        assert parse_timespan(format_timespan(value)) == value
