"""Writer leases (recsys_lib.lake.lease): one writing job per table, checked at every commit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from recsys_lib.lake.lease import LeaseHeld, LeaseLost, LeaseStore

pytestmark = pytest.mark.unit


class Clock:
    """Epoch seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    return LeaseStore(str(tmp_path / "lake"), ttl=60.0, clock=clock)


def _other_job(store, clock):
    """A second process's view of the same lake (its own held-lease registry)."""
    return LeaseStore(store.folder.rsplit("/", 1)[0], ttl=60.0, clock=clock)


def test_a_second_job_is_refused_naming_the_holder(store, clock):
    with store.acquire(["events", "events_quarantine"], "ingest run-1", wait=0):
        other = _other_job(store, clock)
        with pytest.raises(LeaseHeld, match=r"lease on 'events' is held by 'ingest run-1' \(pid \d+ on "):
            other.acquire(["events"], "ingest run-2", wait=0)
        with pytest.raises(LeaseHeld, match="'events_quarantine' is being written by 'ingest run-1'"):
            other.check_commit("events_quarantine")
        store.check_commit("events")  # the holder's own commit goes through
        other.check_commit("user_features")  # a table nobody leases: any writer may commit
    with other.acquire(["events"], "ingest run-2", wait=0):  # given back on exit
        assert other.holder("events").owner == "ingest run-2"
    assert other.holder("events") is None


def test_an_expired_lease_is_taken_and_its_old_holder_can_no_longer_commit(store, clock):
    first = store.acquire(["events"], "stream features", wait=0)
    first._stop.set()  # a holder that stalls: no renewal
    clock.now += 61
    other = _other_job(store, clock)
    with other.acquire(["events"], "ingest run-3", wait=0), pytest.raises(LeaseLost,
                                                                            match="now held by 'ingest run-3'"):
        store.check_commit("events")
    first.release()


def test_an_own_lease_past_its_expiry_refuses_the_commit(store, clock):
    with store.acquire(["events"], "stream features", wait=0) as lease:
        lease._stop.set()
        clock.now += 61
        with pytest.raises(LeaseLost, match="expired"):
            store.check_commit("events")


def test_a_killed_holder_on_this_host_frees_the_lease_at_once(store, clock, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lease(store, clock, host="elsewhere", pid=dead.pid)  # what a SIGKILLed ingest leaves behind
    with pytest.raises(LeaseHeld, match="'ingest run-0' "):  # another host's pids cannot be checked from here
        store.check_commit("events")
    _write_lease(store, clock, host=socket.gethostname(), pid=dead.pid)
    with store.acquire(["events"], "ingest run-1", wait=0):
        assert store.holder("events").owner == "ingest run-1"
    assert "taking over table 'events' from 'ingest run-0'" in caplog.text


def _write_lease(store, clock, *, host, pid):
    os.makedirs(store.folder, exist_ok=True)
    with open(f"{store.folder}/events.json", "w") as fh:
        json.dump({"owner": "ingest run-0", "host": host, "pid": pid, "process_start": 12345, "token": "t0",
                   "acquired_at": clock.now, "expires_at": clock.now + 60}, fh)


def test_a_waiting_job_gets_the_lease_when_the_holder_finishes(tmp_path):
    store = LeaseStore(str(tmp_path / "lake"), ttl=60.0)
    holder = store.acquire(["events"], "ingest run-1", wait=0)
    waiter = subprocess.Popen([sys.executable, "-c", (
        "from recsys_lib.lake.lease import LeaseStore\n"
        f"store = LeaseStore({str(tmp_path / 'lake')!r})\n"
        "print('asking', flush=True)\n"
        "lease = store.acquire(['events'], 'ingest run-2', wait=120)\n"
        "print('got it', flush=True)\n"
        "lease.release()")], stdout=subprocess.PIPE, text=True)
    assert waiter.stdout.readline().strip() == "asking"
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting while the lease is held
    holder.release()
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and out.strip() == "got it"


def test_leases_are_renewed_while_held(tmp_path):
    store = LeaseStore(str(tmp_path / "lake"), ttl=1.5)
    with store.acquire(["events"], "stream features", wait=0):
        first = store.holder("events").expires_at
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store.holder("events").expires_at == first:
            time.sleep(0.1)
        assert store.holder("events").expires_at > first
        store.check_commit("events")


def test_a_damaged_lease_file_is_named(store):
    os.makedirs(store.folder, exist_ok=True)
    with open(f"{store.folder}/events.json", "w") as fh:
        fh.write("{not json")
    with pytest.raises(Exception, match=r"lease file .*events\.json is not a lease"):
        store.check_commit("events")
