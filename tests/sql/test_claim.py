"""claim_signals: one FIFO queue per agent ordered by seq, one processing run per agent
(enforced by the database itself), sync/fyi outside any queue, and concurrent claimers that
never claim one agent twice nor one signal twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import errors

from tests.support.sql import Conn, Engine, connect, create_agent, send_signal, signal_row


def _ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


def test_claim_takes_an_agents_signals_one_at_a_time_in_seq_order(
    admin: Conn, engine: Engine
) -> None:
    agent = create_agent(admin)
    signals = [send_signal(admin, agent, payload={"i": i}) for i in range(3)]

    for expected in signals:
        claimed = engine.claim("w1", limit=10)
        assert _ids(claimed) == [expected]
        assert engine.claim("w2", limit=10) == [], "a second run of the agent was claimed"
        engine.finish(expected, "w1")
    assert engine.claim("w1") == []


def test_an_error_releases_the_agents_queue(admin: Conn, engine: Engine) -> None:
    agent = create_agent(admin)
    first, second = send_signal(admin, agent), send_signal(admin, agent)
    engine.claim("w1")
    engine.finish(first, "w1", error="boom")
    assert _ids(engine.claim("w1")) == [second]


def test_fifo_order_comes_from_seq_not_created_at(admin: Conn, engine: Engine) -> None:
    agent = create_agent(admin)
    first = send_signal(admin, agent)
    admin.execute(
        "insert into public.signals (type, agent_id, created_at)"
        " values ('run', %s, now() - interval '1 day')",
        (agent,),
    )
    assert _ids(engine.claim("w1")) == [first]


def test_inactive_agents_signals_wait_then_run_in_order_once_active(
    admin: Conn, engine: Engine
) -> None:
    sleeper = create_agent(admin, is_active=False)
    waiting = [send_signal(admin, sleeper) for _ in range(3)]
    awake = create_agent(admin)
    other = send_signal(admin, awake)

    assert _ids(engine.claim("w1", limit=10)) == [other]
    assert engine.claim("w1", limit=10) == []
    assert {signal_row(admin, s)["status"] for s in waiting} == {"pending"}

    admin.execute("update public.agents set is_active = true where id = %s", (sleeper,))
    for expected in waiting:
        assert _ids(engine.claim("w1", limit=10)) == [expected]
        engine.finish(expected, "w1")


@pytest.mark.parametrize("type_", ["sync", "fyi"])
def test_sync_and_fyi_are_claimed_together_without_an_agent(
    admin: Conn, engine: Engine, type_: str
) -> None:
    signals = [send_signal(admin, None, type=type_) for _ in range(3)]
    claimed = engine.claim("w1", limit=10)
    assert sorted(_ids(claimed), key=str) == sorted(signals, key=str)
    assert {r["status"] for r in claimed} == {"processing"}


def test_claim_returns_no_more_than_the_limit(admin: Conn, engine: Engine) -> None:
    agents = [create_agent(admin) for _ in range(4)]
    runs = [send_signal(admin, a) for a in agents]
    notes = [send_signal(admin, None, type="fyi") for _ in range(3)]

    batches = [engine.claim("w1", limit=n) for n in (2, 2, 2, 2)]
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    claimed = [i for b in batches for i in _ids(b)]
    assert sorted(claimed, key=str) == sorted(runs + notes, key=str)
    assert len(set(claimed)) == len(claimed)


def test_claim_takes_the_oldest_queue_heads_first_across_agents(
    admin: Conn, engine: Engine
) -> None:
    x, y, z = (create_agent(admin, name=n) for n in "xyz")
    y1 = send_signal(admin, y)
    x1 = send_signal(admin, x)
    send_signal(admin, y)
    z1 = send_signal(admin, z)

    assert _ids(engine.claim("w1", limit=2)) == [y1, x1]
    assert _ids(engine.claim("w1", limit=2)) == [z1]


def test_claim_records_worker_lease_and_attempt(admin: Conn, engine: Engine) -> None:
    agent = create_agent(admin)
    signal_id = send_signal(admin, agent)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    [row] = engine.claim("worker-7", lease_seconds=45, now=now)

    assert row["id"] == signal_id
    assert row["worker_id"] == "worker-7"
    assert row["attempts"] == 1
    assert row["claimed_at"] == now
    assert row["lease_expires_at"] == now + timedelta(seconds=45)


@pytest.mark.parametrize(
    ("worker", "limit", "lease"), [("", 10, 30), ("  ", 10, 30), ("w", 0, 30), ("w", 10, 0)]
)
def test_claim_refuses_nonsense_arguments(
    engine: Engine, worker: str, limit: int, lease: int
) -> None:
    with pytest.raises(errors.InvalidParameterValue) as exc:
        engine.claim(worker, limit=limit, lease_seconds=lease)
    assert "claim_signals needs" in str(exc.value.diag.message_primary)


def test_database_refuses_a_second_processing_run_of_one_agent_even_bypassing_claim(
    admin: Conn,
) -> None:
    agent = create_agent(admin)
    first, second = send_signal(admin, agent), send_signal(admin, agent)
    start = (
        "update public.signals set status = 'processing', worker_id = %s,"
        " lease_expires_at = now() + interval '30 seconds' where id = %s"
    )
    admin.execute(start, ("w1", first))

    with pytest.raises(errors.UniqueViolation) as exc:
        admin.execute(start, ("w2", second))
    assert exc.value.diag.constraint_name == "signals_one_processing_run_per_agent"
    assert signal_row(admin, second)["status"] == "pending"


def test_many_sync_and_fyi_signals_may_process_at_once(admin: Conn) -> None:
    notes = [send_signal(admin, None, type=t) for t in ("sync", "fyi", "sync", "fyi")]
    admin.execute(
        "update public.signals set status = 'processing', worker_id = 'w',"
        " lease_expires_at = now() + interval '30 seconds' where id = any(%s)",
        (notes,),
    )
    row = admin.execute(
        "select count(*) as n from public.signals where status = 'processing'"
    ).fetchone()
    assert row == {"n": 4}


# ---------------------------------------------------------------------------------------------
# Concurrency: several claimers, each on its own connection and thread
# ---------------------------------------------------------------------------------------------

AGENTS = 24
SIGNALS_PER_AGENT = 8
NOTES = 16
CLAIMERS = 6


class ClaimLedger:
    """What every claimer took, checked the moment it was claimed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: set[uuid.UUID] = set()  # agents with a run claimed and not yet finished
        self.seen: set[uuid.UUID] = set()
        self.order: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)

    def took(self, rows: list[dict[str, object]]) -> None:
        with self.lock:
            for row in rows:
                signal_id, agent = row["id"], row["agent_id"]
                assert isinstance(signal_id, uuid.UUID)
                assert signal_id not in self.seen, f"signal {signal_id} claimed twice"
                self.seen.add(signal_id)
                if row["type"] == "run":
                    assert isinstance(agent, uuid.UUID)
                    assert agent not in self.in_flight, f"agent {agent} has two runs claimed"
                    self.in_flight.add(agent)
                    self.order[agent].append(signal_id)

    def finishing(self, row: dict[str, object]) -> None:
        # Called before finish_signal commits: until then the database still says processing,
        # so any claim of this agent in between would be a real double claim.
        if row["type"] == "run":
            with self.lock:
                self.in_flight.discard(row["agent_id"])  # type: ignore[arg-type]


def _claimer(url: str, name: str, limit: int, ledger: ClaimLedger, deadline: float) -> int:
    finished = 0
    with connect(url, role="service_role") as conn:
        engine = Engine(conn)
        while time.monotonic() < deadline:
            rows = engine.claim(name, limit=limit)
            if not rows:
                left = conn.execute(
                    "select count(*) as n from public.signals"
                    " where status in ('pending', 'processing')"
                ).fetchone()
                if left is not None and left["n"] == 0:
                    return finished
                continue
            ledger.took(rows)
            for row in rows:
                ledger.finishing(row)
                engine.finish(row["id"], name)
                finished += 1
    raise AssertionError(f"claimer {name} ran out of time with work left")


def test_concurrent_claimers_never_claim_one_agent_twice_nor_one_signal_twice(
    any_database_url: str, admin: Conn
) -> None:
    agents = [create_agent(admin) for _ in range(AGENTS)]
    expected: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    notes = []
    for i in range(SIGNALS_PER_AGENT):
        for agent in agents:
            expected[agent].append(send_signal(admin, agent, payload={"i": i}))
        notes += [send_signal(admin, None, type="fyi" if i % 2 else "sync") for _ in range(2)]
    ledger = ClaimLedger()
    deadline = time.monotonic() + 60

    with ThreadPoolExecutor(CLAIMERS) as pool:
        futures = [
            pool.submit(_claimer, any_database_url, f"w{n}", 1 + n % 3, ledger, deadline)
            for n in range(CLAIMERS)
        ]
        done = sum(f.result() for f in futures)

    assert done == AGENTS * SIGNALS_PER_AGENT + len(notes)
    assert dict(ledger.order) == dict(expected), "an agent's signals were claimed out of order"
    rows = admin.execute(
        "select status, attempts, count(*) as n from public.signals group by 1, 2"
    ).fetchall()
    assert rows == [{"status": "complete", "attempts": 1, "n": done}]
