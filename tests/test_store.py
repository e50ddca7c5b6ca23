"""
The subscriber stores: one suite, L{StoreTests}, run against every
L{ISubscriberStore}, then what only the SQLite store does (the file, its
mode, batched writes).
"""

import itertools
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import Logger
from zope.interface.verify import verifyObject

from client_proxy.store import (
    IN_MEMORY,
    ISubscriberStore,
    MemorySubscriberStore,
    SQLiteSubscriberStore,
    StateFileError,
    openStore,
)

COMPONENT = "proxy.example.org"
ALICE = "alice@example.org"
BOB = "bob@example.net"
CAROL = "carol@example.org"


class StoreTests:
    """
    What every L{ISubscriberStore} does. A subclass makes the store to test
    in L{make}; L{store} is one made for each test.
    """

    store: ISubscriberStore

    def make(self) -> ISubscriberStore:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _store(self):
        self.store = self.make()
        yield
        self.store.close()

    def test_interface(self):
        assert verifyObject(ISubscriberStore, self.store)

    def test_add_and_remove(self):
        assert self.store.add(BOB) is True
        assert self.store.add(ALICE) is True
        assert self.store.add(ALICE) is False
        assert ALICE in self.store and CAROL not in self.store
        assert len(self.store) == 2
        assert self.store.remove(ALICE) is True
        assert self.store.remove(ALICE) is False
        assert list(self.store) == [BOB]
        assert len(self.store) == 1

    def test_iteration_in_order_of_subscription(self):
        for jid in (CAROL, ALICE, BOB):
            self.store.add(jid)
        assert list(self.store) == [CAROL, ALICE, BOB]

    def test_iteration_is_a_snapshot(self):
        self.store.add(ALICE)
        self.store.add(BOB)
        seen = []
        for jid in self.store:
            seen.append(jid)
            self.store.remove(jid)
            self.store.add(jid + ".again")
        assert seen == [ALICE, BOB]

    def test_count_per_domain(self):
        for jid in (ALICE, BOB, CAROL):
            self.store.add(jid)
        assert self.store.countDomain("example.org") == 2
        assert self.store.countDomain("example.net") == 1
        assert self.store.countDomain("sub.example.org") == 0
        self.store.remove(BOB)
        self.store.remove(ALICE)
        assert self.store.countDomain("example.net") == 0
        assert self.store.countDomain("example.org") == 1

    def test_a_domain_subscriber(self):
        """
        A bare domain (a server, or another component) may subscribe too.
        """
        self.store.add("example.org")
        assert self.store.countDomain("example.org") == 1

    def test_reload_keeps_own_changes(self):
        self.store.add(ALICE)
        self.store.add(BOB)
        self.store.remove(BOB)
        self.store.reload()
        assert list(self.store) == [ALICE]
        assert self.store.countDomain("example.net") == 0


class TestMemoryStore(StoreTests):
    def make(self) -> ISubscriberStore:
        return MemorySubscriberStore()


class TestSQLiteStore(StoreTests):
    _names = itertools.count()

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path
        self.clock = Clock()

    @pytest.fixture(autouse=True)
    def _store(self, _folder):
        self.store = self.make()
        yield
        self.store.close()

    def make(self) -> ISubscriberStore:
        return SQLiteSubscriberStore(
            str(self.folder / ("state%d.db" % next(self._names))), COMPONENT, self.clock
        )


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(["memory", "sqlite"]),
    changes=st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["x.example", "y.example"]),
        ),
        max_size=30,
    ),
)
def test_counts_follow_any_changes(kind, changes):
    """
    Whatever the changes, a store holds the JIDs a set would, and its
    counts agree with them; so does the store reloaded, and a new store on
    the same file.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.db")
        store = openStore(path if kind == "sqlite" else None, COMPONENT, Clock())
        model: set[str] = set()
        for add, user, host in changes:
            jid = "%s@%s" % (user, host)
            expected = (jid not in model) if add else (jid in model)
            assert (store.add if add else store.remove)(jid) == expected
            (model.add if add else model.discard)(jid)
        store.flush()
        store.reload()
        stores = [store]
        if kind == "sqlite":
            stores.append(SQLiteSubscriberStore(path, COMPONENT, Clock()))
        for subject in stores:
            assert set(subject) == model
            assert len(subject) == len(model)
            for host in ("x.example", "y.example"):
                assert subject.countDomain(host) == sum(j.endswith("@" + host) for j in model)
            subject.close()


# The SQLite store


def rows(path: str, component: str = COMPONENT) -> list[str]:
    """
    What the file holds, read as another process would.
    """
    db = sqlite3.connect(path)
    try:
        return [
            jid
            for (jid,) in db.execute(
                "SELECT jid FROM subscribers WHERE component = ? ORDER BY rowid", (component,)
            )
        ]
    finally:
        db.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "state.db")


def test_subscribers_survive_in_the_file(path, clock):
    first = SQLiteSubscriberStore(path, COMPONENT, clock)
    first.add(ALICE)
    first.add(BOB)
    first.remove(BOB)
    first.close()
    assert list(SQLiteSubscriberStore(path, COMPONENT, clock)) == [ALICE]


def test_changes_are_written_in_one_batch_after_the_delay(path, clock):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    store.add(ALICE)
    store.add(BOB)
    store.add(CAROL)
    store.remove(BOB)
    assert len(clock.getDelayedCalls()) == 1, "one write for every change"
    clock.advance(store.writeDelay - 0.01)
    assert rows(path) == []
    clock.advance(0.01)
    assert rows(path) == [ALICE, CAROL]
    assert clock.getDelayedCalls() == [], "nothing more to write"


def test_large_batches_are_written_a_part_per_turn(path, clock):
    """
    At most batchSize rows a transaction: the reactor runs between them.
    """
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    store.batchSize = 10
    scheduled = []  # (delay, rows in the file when the write was scheduled)
    callLater = clock.callLater

    def schedule(delay, f, *args, **kwargs):
        scheduled.append((delay, len(rows(path))))
        return callLater(delay, f, *args, **kwargs)

    clock.callLater = schedule
    for i in range(25):
        store.add("u%d@example.org" % i)
    clock.advance(store.writeDelay)
    assert scheduled == [(store.writeDelay, 0), (0, 10), (0, 20)]
    assert len(rows(path)) == 25
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("stop", ["flush", "close"])
def test_flush_and_close_write_at_once(path, clock, stop):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    store.add(ALICE)
    getattr(store, stop)()
    assert rows(path) == [ALICE]
    assert clock.getDelayedCalls() == []


def test_reload_sees_what_another_process_wrote(path, clock):
    active = SQLiteSubscriberStore(path, COMPONENT, clock)
    standby = SQLiteSubscriberStore(path, COMPONENT, Clock())
    active.add(ALICE)
    active.flush()
    assert list(standby) == []
    standby.reload()
    assert list(standby) == [ALICE]
    assert standby.countDomain("example.org") == 1


def test_reload_keeps_changes_not_written_yet(path, clock):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    other = SQLiteSubscriberStore(path, COMPONENT, Clock())
    store.add(ALICE)
    store.flush()
    other.add(BOB)
    other.flush()
    store.remove(ALICE)
    store.add(CAROL)
    store.reload()
    assert set(store) == {BOB, CAROL}


def test_proxies_may_share_a_file(path, clock):
    one = SQLiteSubscriberStore(path, COMPONENT, clock)
    other = SQLiteSubscriberStore(path, "other.example.org", clock)
    one.add(ALICE)
    other.add(BOB)
    one.close()
    other.close()
    assert list(SQLiteSubscriberStore(path, COMPONENT, clock)) == [ALICE]
    assert list(SQLiteSubscriberStore(path, "other.example.org", clock)) == [BOB]


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_is_for_its_owner_only(path, clock):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    assert mode(path) == 0o600
    store.add(ALICE)
    clock.advance(store.writeDelay)
    journals = [path + suffix for suffix in ("-wal", "-shm") if os.path.exists(path + suffix)]
    assert journals, "written through a write-ahead log"
    assert [mode(journal) for journal in journals] == [0o600] * len(journals)
    store.close()


def test_an_existing_file_keeps_its_mode(path, clock):
    SQLiteSubscriberStore(path, COMPONENT, clock).close()
    os.chmod(path, 0o640)
    SQLiteSubscriberStore(path, COMPONENT, clock).close()
    assert mode(path) == 0o640


def test_a_file_that_is_not_a_database(path):
    with open(path, "w") as f:
        f.write("not a database, " * 100)
    with pytest.raises(StateFileError, match="file is not a database"):
        SQLiteSubscriberStore(path)


def test_a_missing_folder(tmp_path):
    with pytest.raises(StateFileError, match="No such file or directory"):
        SQLiteSubscriberStore(str(tmp_path / "missing" / "state.db"))


def test_opening_installs_no_reactor(path):
    """
    Opening a store (to check a configuration) leaves the choice of a
    reactor to twistd: the global reactor is looked up at the first change
    only.
    """
    code = (
        "import sys; from client_proxy.store import SQLiteSubscriberStore; "
        "SQLiteSubscriberStore(sys.argv[1]).close(); "
        "print('twisted.internet.reactor' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def logged(store):
    events = []
    store.log = Logger(observer=events.append)
    return events


def test_a_failed_write_is_kept_and_tried_again(path, clock, monkeypatch):
    """
    A write that fails is logged once, tried again every writeDelay, and
    its success said; the subscribers stay in memory meanwhile.
    """
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    events = logged(store)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the file
    store.add(ALICE)
    clock.advance(store.writeDelay)
    store.add(BOB)
    clock.advance(store.writeDelay)
    clock.advance(store.writeDelay)
    assert ALICE in store and BOB in store
    assert [e["log_level"].name for e in events] == ["error"], "said once"
    assert "database is locked" in str(events[0]["error"])
    locker.execute("ROLLBACK")
    locker.close()
    clock.advance(store.writeDelay)
    assert rows(path) == [ALICE, BOB]
    assert [e["log_level"].name for e in events] == ["error", "info"]
    assert clock.getDelayedCalls() == []


def test_a_failed_flush_is_logged(path, clock):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    events = logged(store)
    store._db.close()
    assert store.add(ALICE) is True
    store.flush()
    assert ALICE in store, "kept in memory for the life of the process"
    assert "changes for {count} subscribers are lost" in events[-1]["log_format"]
    assert events[-1]["count"] == 1


def test_a_failed_reload_keeps_the_subscribers(path, clock):
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    events = logged(store)
    store.add(ALICE)
    store._db.close()
    store.reload()
    assert list(store) == [ALICE]
    assert "Cannot read" in events[0]["log_format"]


# openStore


@pytest.mark.parametrize("name", [None, "", IN_MEMORY])
def test_open_in_memory(name, clock):
    assert isinstance(openStore(name, COMPONENT, clock), MemorySubscriberStore)


def test_open_a_file(path, clock):
    store = openStore(path, COMPONENT, clock)
    assert isinstance(store, SQLiteSubscriberStore)
    assert (store.path, store.component, store.clock) == (path, COMPONENT, clock)
    store.close()

