"""The operator's work queue: keys deduplicated, never worked on twice at once, back soon
after a retryable failure (doubling), at the resync interval otherwise, never after the
object is gone."""

from __future__ import annotations

import asyncio

from connectors.operator.workqueue import Outcome, Timing, WorkQueue

FAST = Timing(resync_seconds=0.2, first_retry_seconds=0.01, max_retry_seconds=0.04)


async def drained(queue: WorkQueue[str]) -> list[str]:
    """The keys ready now, each taken and finished at once as a success."""
    keys = []
    while not queue.idle():
        key = await queue.get()
        keys.append(key)
        queue.done(key, Outcome.SUCCEEDED)
    return keys


async def test_a_key_added_many_times_is_worked_on_once():
    queue: WorkQueue[str] = WorkQueue(FAST)
    for key in ("a", "b", "a", "a", "b"):
        queue.add(key)
    assert await drained(queue) == ["a", "b"]
    queue.close()


async def test_a_key_added_while_active_is_worked_on_again_after_not_alongside():
    queue: WorkQueue[str] = WorkQueue(FAST)
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # a change arrives during the pass
    assert queue.idle() is False
    got_again = asyncio.create_task(queue.get())
    await asyncio.sleep(0.05)
    assert not got_again.done()  # no second worker takes it while the first holds it
    assert queue.done(key, Outcome.SUCCEEDED) is None  # back at once, not after a resync
    assert await asyncio.wait_for(got_again, 1) == "a"
    queue.close()


async def test_retryable_failures_back_off_doubling_to_the_ceiling_and_success_resets():
    queue: WorkQueue[str] = WorkQueue(FAST)
    queue.add("a")
    delays = []
    for _ in range(4):
        key = await asyncio.wait_for(queue.get(), 1)
        delays.append(queue.done(key, Outcome.RETRY))
    assert delays == [0.01, 0.02, 0.04, 0.04]
    key = await asyncio.wait_for(queue.get(), 1)
    assert queue.done(key, Outcome.SUCCEEDED) == FAST.resync_seconds
    key = await asyncio.wait_for(queue.get(), 1)
    assert queue.done(key, Outcome.RETRY) == 0.01  # the count began again
    queue.close()


async def test_a_terminal_failure_waits_for_the_resync_not_a_retry():
    queue: WorkQueue[str] = WorkQueue(FAST)
    queue.add("a")
    key = await queue.get()
    assert queue.done(key, Outcome.TERMINAL) == FAST.resync_seconds
    await asyncio.sleep(FAST.max_retry_seconds * 2)
    assert queue.idle()  # not back yet
    assert await asyncio.wait_for(queue.get(), 1) == "a"  # but back at the resync
    queue.close()


async def test_a_forgotten_key_is_not_brought_back_by_its_timer():
    queue: WorkQueue[str] = WorkQueue(FAST)
    queue.add("a")
    key = await queue.get()
    queue.done(key, Outcome.RETRY)
    queue.forget("a")
    await asyncio.sleep(FAST.max_retry_seconds * 3)
    assert queue.idle()
    queue.add_after("b", 0.01)
    queue.add_after("b", 10)  # a newer request replaces the earlier one
    await asyncio.sleep(0.05)
    assert queue.idle()
    queue.close()
