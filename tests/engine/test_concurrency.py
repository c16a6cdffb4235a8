"""One engine runs different agents' signals at the same time, never more than its concurrency
setting allows. Real PostgreSQL, real sandbox: each step is Python code busy for a while."""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.sandbox.settings import SandboxSettings
from tests.support.engine import SPIN, Db, running_engine
from tests.support.waiting import wait_for

AGENTS = 4
SPIN_SECONDS = 0.8
# Room in the sandbox for more steps at once than any concurrency tested here: the cap seen
# must be the engine's, not the sandbox's (whose default is two workers per tenant).
ROOMY_SANDBOX = SandboxSettings(pool_size=3, max_workers_per_tenant=AGENTS)


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (one that ends as another starts
    does not overlap it)."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda edge: (edge[0], edge[1]),  # at equal times, ends (-1) before starts
    )
    open_now = peak = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak


@pytest.mark.parametrize("concurrency", [2, 3])
async def test_runs_of_different_agents_overlap_up_to_the_concurrency_limit(
    database_url: str, concurrency: int
) -> None:
    async with Db(database_url) as db:
        agents = [await db.apply(f"busy-{i}", [SPIN]) for i in range(AGENTS)]
        sent = [await db.send(agent, {"seconds": SPIN_SECONDS}) for agent in agents]
        processing_seen: list[int] = []

        async def all_finished() -> bool:
            # Sampled while waiting: how many signals the database has processing right now.
            rows = await db.rows(
                "select count(*) as n from public.signals where status = 'processing'"
            )
            processing_seen.append(rows[0]["n"])
            return all([await db.finished(signal_id) for signal_id in sent])

        async with running_engine(database_url, concurrency=concurrency, sandbox=ROOMY_SANDBOX):
            await wait_for(all_finished, timeout=30, what="every agent's run")
        sessions = await db.rows(
            "select agent_id, status, started_at, completed_at from public.runtime_sessions"
        )
        steps = await db.rows(
            "select session_id, started_at, completed_at from public.step_results"
        )

    assert sorted(s["agent_id"] for s in sessions) == sorted(agents)
    assert all(s["status"] == "success" for s in sessions)
    # Sessions span claim to end (database clock): the engine held exactly `concurrency` runs
    # at once, though more agents had work waiting, and never more.
    assert most_at_once([(s["started_at"], s["completed_at"]) for s in sessions]) == concurrency
    # The steps themselves (engine clock) ran side by side, not one after another.
    assert len(steps) == AGENTS
    assert most_at_once([(s["started_at"], s["completed_at"]) for s in steps]) == concurrency
    assert processing_seen and max(processing_seen) <= concurrency


def test_most_at_once_counts_overlaps_not_touching_ends() -> None:
    t = [datetime(2026, 1, 1, 0, 0, second) for second in range(6)]
    assert most_at_once([]) == 0
    assert most_at_once([(t[0], t[2]), (t[2], t[4])]) == 1
    assert most_at_once([(t[0], t[3]), (t[1], t[4]), (t[2], t[5])]) == 3
    assert most_at_once([(t[0], t[1]), (t[0], t[5]), (t[2], t[3]), (t[4], t[5])]) == 2
