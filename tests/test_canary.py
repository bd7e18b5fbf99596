"""The reproducibility canary (tests/canary.py): this machine must give the committed numbers, with one
thread and with every core. It runs wherever the suite runs, CI included, so each machine checks itself."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from tests.canary import (
    LABELS_FILE,
    LOGLIK_TOLERANCE,
    LOSS_TOLERANCE,
    LOSSES_FILE,
    label_logliks,
    machine,
    train_losses,
)


def _differences(expected: dict, found: dict) -> tuple[float, list[str]]:
    """Largest |difference| over every answer, and the rows whose most likely answer changed."""
    assert found.keys() == expected.keys()
    worst, flipped = 0.0, []
    for row, want in expected.items():
        got = found[row]
        worst = max(worst, *(abs(got[answer] - value) for answer, value in want.items()))
        if max(want, key=want.get) != max(got, key=got.get):
            flipped.append(row)
    return worst, flipped


@pytest.fixture(scope="module")
def logliks_by_threads(all_records, embedded) -> dict[int, dict]:
    model, tokenizer = embedded
    threads = torch.get_num_threads()
    found = {}
    try:
        for count in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(count)
            found[count] = label_logliks(all_records, model, tokenizer)
    finally:
        torch.set_num_threads(threads)
    return found


def test_label_logliks_are_the_committed_ones_with_one_thread_and_all_cores(logliks_by_threads):
    expected = json.loads(LABELS_FILE.read_text())
    for threads, found in logliks_by_threads.items():
        worst, flipped = _differences(expected["rows"], found)
        where = f"{machine()}, {threads} thread(s); committed from {expected['made_on']['machine']}"
        assert not flipped, f"most likely answer changed on {flipped} ({where})"
        assert worst <= LOGLIK_TOLERANCE, f"log-likelihoods moved by {worst:.2e} ({where})"
    assert len(expected["rows"]) == 16  # 4 tasks x 2 rows x (zs, fs-3)


def test_thread_count_changes_no_bit(logliks_by_threads):
    counts = list(logliks_by_threads.values())
    assert all(found == counts[0] for found in counts[1:])


def test_the_canary_fails_when_a_score_moves(logliks_by_threads):
    expected = json.loads(LABELS_FILE.read_text())["rows"]
    found = next(iter(logliks_by_threads.values()))
    row = next(iter(found))
    moved = {
        **found,
        row: {a: v + (3 * LOGLIK_TOLERANCE if i == 0 else 0) for i, (a, v) in enumerate(found[row].items())},
    }
    worst, _ = _differences(expected, moved)
    assert worst > LOGLIK_TOLERANCE


def test_training_losses_are_the_committed_ones_with_one_thread_and_all_cores(tmp_path, pmdata_records):
    expected = json.loads(LOSSES_FILE.read_text())
    runs = {n: train_losses(tmp_path / f"threads-{n}", pmdata_records, n) for n in (1, os.cpu_count() or 1)}
    for threads, losses in runs.items():
        assert len(losses) == len(expected["losses"])
        for step, (got, want) in enumerate(zip(losses, expected["losses"], strict=True), start=1):
            assert math.isclose(got, want, rel_tol=LOSS_TOLERANCE), (
                f"step {step}: loss {got} vs committed {want} ({machine()}, {threads} thread(s); "
                f"committed from {expected['made_on']['machine']})"
            )
    assert runs[1] == runs[os.cpu_count() or 1]  # the same bits for any thread count
