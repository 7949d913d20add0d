"""The test suite's ways of waiting can themselves fail: a wait that never settles says
what it waited for, a `holds` fails on the first wrong answer, and a process that exits
while it is awaited fails at once rather than at the timeout."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest

from tests.support.waiting import holds, settled, started


def test_settled_returns_the_first_answer_that_is_something():
    answers = iter([None, False, "ready"])
    assert settled(lambda: next(answers), 5, "the answer") == "ready"


def test_settled_names_what_never_happened_and_the_last_error():
    def never() -> bool:
        raise ConnectionRefusedError("refused")

    with pytest.raises(AssertionError, match=r"the registry starting: not within 0\.3s .*refused"):
        settled(never, 0.3, "the registry starting")


def test_holds_fails_on_the_first_answer_that_changes():
    answers = itertools.chain([401, 401], itertools.repeat(200))
    with pytest.raises(AssertionError, match="became 200 instead of staying 401"):
        holds(lambda: next(answers), 401, 5)


def test_holds_asks_for_the_whole_time():
    asked: list[float] = []

    def answer() -> int:
        asked.append(time.monotonic())
        return 401

    started_at = time.monotonic()
    holds(answer, 401, 0.5)
    assert asked[-1] - started_at >= 0.5 and len(asked) >= 4


def test_a_process_that_exits_fails_at_once_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("address already in use\n")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)the server: exited with code 3.*already in use"):
        started(process, lambda: None, 30, "the server", log)
    assert time.monotonic() - began < 5
