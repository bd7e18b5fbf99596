"""People recovered from wearable windows: HealthSLM-Bench's PMData records carry no participant id, but its
14-day windows slide by a day, so one person's windows share runs of daily readings. Windows linked by a
shared run of three consecutive non-zero readings of a series, over train and eval together, form 19 groups
(PMData has 16 participants). The groups are the bootstrap's resampling unit and what `data.split: grouped`
keeps on one side of the split."""

from __future__ import annotations

import hashlib

from healthslm.data.readings import raw_fields

RUN = 3  # consecutive non-zero daily readings that identify a person's days


def _series(record: dict) -> dict[str, list[str]]:
    return {
        name: [v.strip() for v in raw.strip("[]").split(",") if v.strip() and float(v) != 0]
        for name, raw in raw_fields(record).items()
        if raw.startswith("[")
    }


def _runs(record: dict, run: int) -> set[tuple]:
    """Every `run` consecutive non-zero readings of each series a record shows."""
    return {
        (name, *days[start : start + run])
        for name, days in _series(record).items()
        for start in range(len(days) - run + 1)
    }


def shared_readings(test: list[dict], train: list[dict], run: int = RUN) -> set[str]:
    """Eval records that show `run` consecutive non-zero daily readings of a series that a train record shows
    too: the same person's same days on both sides of the split (PMData's 14-day windows slide by a day)."""
    seen = set().union(*(_runs(record, run) for record in train)) if train else set()
    return {record["id"] for record in test if _runs(record, run) & seen}


def overlap_groups(records: list[dict], run: int = RUN) -> list[int] | None:
    """Clusters of records whose windows overlap: two records share a cluster when a series shows the same
    `run` consecutive non-zero readings in both, directly or through other records. Over a dataset's train
    and eval windows together these are its people (PMData: 19 groups for 16 participants). None when no two
    records overlap, so rows resample one by one."""
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple, int] = {}
    for index, record in enumerate(records):
        for key in sorted(_runs(record, run)):
            parent[root(index)] = root(first_seen.setdefault(key, index))
    groups = [root(i) for i in range(len(records))]
    return groups if len(set(groups)) < len(groups) else None


def grouped_split(train: list[dict], test: list[dict], seed: int) -> tuple[list[dict], list[dict]] | None:
    """The task's records re-split so that no group of overlapping windows (a person) has records on both
    sides, with about as many eval records as the seed split had. Groups are named by their readings, so
    every task of a dataset built from the same windows gets the same split. None: no groups to keep."""
    records = train + test
    groups = overlap_groups(records)
    if groups is None:
        return None
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)

    def name(group: int) -> str:
        first = min(min(_runs(records[i], RUN), default=()) for i in members[group])
        return hashlib.sha256(f"{seed}:{first}".encode()).hexdigest()

    chosen, size = set(), 0
    for group in sorted(members, key=name):  # a seeded order of the groups, the same for every task
        if abs(size + len(members[group]) - len(test)) < abs(size - len(test)):
            chosen.add(group)
            size += len(members[group])
    sides: dict[str, list[dict]] = {"train": [], "eval": []}
    for index, record in enumerate(records):
        split = "eval" if groups[index] in chosen else "train"
        new_id = f"{record['id'].rsplit('-', 2)[0]}-{split}-{len(sides[split]):05d}"
        provenance = record.get("provenance", {}) | {"seed_split_id": record["id"]}
        sides[split].append(record | {"id": new_id, "split": split, "provenance": provenance})
    return sides["train"], sides["eval"]
