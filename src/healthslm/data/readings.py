"""Wearable readings as numbers, for the physical-range checks of the gate.

Readings appear written into a record's text ("[Steps]: [4955.0, 6495.0] steps, [Mood]: 4 out of 5") or as
CSV columns (GLOBEM). Each named reading measures a quantity whose physical range is a param
(validate.physical_ranges); a reading not named here (e.g. "[Activity Type]") is text and not checked.
"""

from __future__ import annotations

import re

import pandas as pd

FIELD = re.compile(r"\[([^\]]+)\]: (\[[^\]]*\]|[^,;\[]+)")
_NUMBER = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?))", re.I)

QUANTITY = {  # reading as named in the data -> quantity (a key of validate.physical_ranges)
    "Steps": "steps",
    "Burned Calorories": "calories",  # sic: the PMData/AW_FB prompts' spelling
    "Burned Calories": "calories",
    "Resting Heart Rate": "heart_rate",
    "Heart Rate": "heart_rate",
    "SleepMinutes": "minutes_per_day",
    "Sleep_duration": "minutes_per_day",
    "Time_in_bed_after_wakeup": "minutes_per_day",
    "Time_stay_awake_but_still_in_bed": "minutes_per_day",
    "Time_spent_to_fall_asleep": "minutes_per_day",
    "Duration": "minutes_per_day",
    "Mood": "mood",
    "MET Value": "met",
    "Sleep_efficiency": "percent",
}
TABLE_COLUMNS = ["row", "field", "quantity", "value", "text"]


def raw_fields(record: dict) -> dict[str, str]:
    """The readings of a wearable record's input as written: {"Steps": "[4955.0, 6495.0]", ...}."""
    return {name: raw.strip() for name, raw in FIELD.findall(record.get("input") or "")}


def _number(text: str) -> float:
    """The leading number of a written value ("4 out of 5" -> 4.0); NaN when there is none."""
    match = _NUMBER.match(text)
    return float(match.group(1)) if match else float("nan")


def text_readings(texts: list[str]) -> pd.DataFrame:
    """One row per numeric reading in each text: row (the text's index), field, quantity, value, text."""
    rows = []
    for index, text in enumerate(texts):
        for name, raw in FIELD.findall(text or ""):
            if name not in QUANTITY:
                continue
            raw = raw.strip()
            parts = raw.strip("[]").split(",") if raw.startswith("[") else [raw]
            rows += [
                (index, name, QUANTITY[name], _number(part), part.strip()) for part in parts if part.strip()
            ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def column_readings(frame: pd.DataFrame) -> pd.DataFrame:
    """The same table from columns named as readings (a CSV of numbers); a value that is no number is NaN."""
    rows = [
        (index, name, QUANTITY[name], _number(str(value)), str(value))
        for name in frame.columns
        if name in QUANTITY
        for index, value in enumerate(frame[name])
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
