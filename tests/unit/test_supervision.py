"""Supervised loops: a failing pass is logged without foreign messages, retried with
backoff, and reported by Health once it cannot recover; a success clears the record."""

from __future__ import annotations

import asyncio
import logging

import pytest

from connectors.api.errors import StateError
from connectors.supervision import Backoff, Health, describe, supervise

FAST = Backoff(every=0.01, first=0.01, ceiling=0.02)


async def run_until(done: asyncio.Event, task: asyncio.Task[None], seconds: float = 5) -> None:
    await asyncio.wait_for(done.wait(), seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_survives_failing_passes_and_recovers_with_health_cleared():
    health = Health(unready_after=3)
    seen: list[list[str]] = []  # what readiness said before each pass
    done = asyncio.Event()

    async def step() -> None:
        seen.append(health.problems())
        if len(seen) <= 4:
            raise StateError("no signing key left in /state/keys")
        if len(seen) == 6:
            done.set()

    task = asyncio.create_task(supervise("key reload", step, health, FAST))
    await run_until(done, task)
    problem = "key reload failing ({} attempts in a row, see the log)"
    assert seen == [
        [], [], [], [problem.format(3)], [problem.format(4)], []
    ]  # fmt: skip
    assert health.problems() == []


async def test_a_programming_error_is_reported_at_once_without_its_message(
    caplog: pytest.LogCaptureFixture,
):
    health = Health(unready_after=3)
    done = asyncio.Event()

    async def step() -> None:
        if health.record("watching Secrets").failures:
            done.set()
        raise KeyError("Authorization: Basic c2VjcmV0")

    task = asyncio.create_task(supervise("watching Secrets", step, health, FAST))
    with caplog.at_level(logging.ERROR):
        await run_until(done, task)
    [problem] = health.problems()
    assert problem == "watching Secrets failing (2 attempts in a row, see the log)"
    assert "c2VjcmV0" not in caplog.text and "c2VjcmV0" not in problem
    assert "watching Secrets failed (attempt 1): KeyError at test_supervision.py:" in caplog.text


def test_backoff_doubles_from_the_first_delay_up_to_the_ceiling():
    backoff = Backoff(every=30, first=0.5, ceiling=4)
    assert [backoff.delay(n) for n in range(6)] == [30, 0.5, 1, 2, 4, 4]


def test_our_errors_and_os_errors_are_described_by_their_message():
    assert describe(StateError("the key directory is gone")) == (
        "StateError: the key directory is gone"
    )
    assert describe(FileNotFoundError(2, "No such file", "/s/status.json")) == (
        "FileNotFoundError: [Errno 2] No such file: '/s/status.json'"
    )
