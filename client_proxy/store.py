"""
Where the component's subscribers are kept: L{ISubscriberStore}, in memory
(L{MemorySubscriberStore}) or in an SQLite file that survives restarts
(L{SQLiteSubscriberStore}). L{openStore} picks one for a state file
setting.

Subscribers are bare JIDs, as the server wrote them (already through
stringprep, RFC 6120, 8.1.1).
"""

import os
import sqlite3
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from client_proxy.jat import domain

#: The value of a state file that stands for no file: nothing persists.
IN_MEMORY = ":memory:"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS subscribers ("
    " component TEXT NOT NULL,"
    " jid TEXT NOT NULL,"
    " PRIMARY KEY (component, jid))"
)
_INSERT = "INSERT OR IGNORE INTO subscribers VALUES (?, ?)"
_DELETE = "DELETE FROM subscribers WHERE component = ? AND jid = ?"
_SELECT = "SELECT jid FROM subscribers WHERE component = ? ORDER BY rowid"


class StateFileError(Exception):
    """
    The subscriber database cannot be opened, read or written.
    """


class ISubscriberStore(Interface):
    """
    The bare JIDs subscribed to the component's presence.

    Every operation but L{reload} and L{close} works on what the store
    holds in memory, so that none of them waits for a disk: a store that
    persists writes its changes later, and L{flush} writes them now.
    """

    def add(jid: str) -> bool:
        """
        Add the bare JID C{jid}.

        @return: whether it was not a subscriber already.
        """

    def remove(jid: str) -> bool:
        """
        Remove the bare JID C{jid}.

        @return: whether it was a subscriber.
        """

    def __contains__(jid: object) -> bool:
        """
        Whether C{jid} is a subscriber.
        """

    def __len__() -> int:
        """
        The number of subscribers.
        """

    def countDomain(host: str) -> int:
        """
        The number of subscribers whose domain is C{host}, in constant
        time: it is asked at every subscription request.
        """

    def __iter__() -> Iterator[str]:
        """
        Every subscriber, in the order they subscribed, as they were when
        the iteration began: changes made while iterating do not disturb
        it.
        """

    def reload() -> None:
        """
        Read the subscribers from the file again: another process may have
        changed them (a standby instance taking over from the active one,
        both with the same state file). Changes of this store not written
        yet are kept. A failure is logged, and the subscribers known are
        kept.
        """

    def flush() -> None:
        """
        Write every change now (at a graceful stop). A failure is logged.
        """

    def close() -> None:
        """
        Write every change, then let go of the file.
        """


@implementer(ISubscriberStore)
class MemorySubscriberStore:
    """
    Subscribers in memory only: they are forgotten when the process ends.
    """

    def __init__(self) -> None:
        # A dict keeps the order in which they subscribed.
        self._jids: dict[str, None] = {}
        self._domains: dict[str, int] = {}

    def add(self, jid: str) -> bool:
        if jid in self._jids:
            return False
        self._jids[jid] = None
        host = domain(jid)
        self._domains[host] = self._domains.get(host, 0) + 1
        return True

    def remove(self, jid: str) -> bool:
        if jid not in self._jids:
            return False
        del self._jids[jid]
        host = domain(jid)
        left = self._domains.pop(host) - 1
        if left:
            self._domains[host] = left
        return True

    def __contains__(self, jid: object) -> bool:
        return jid in self._jids

    def __len__(self) -> int:
        return len(self._jids)

    def countDomain(self, host: str) -> int:
        return self._domains.get(host, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jids))

    def reload(self) -> None:
        """
        Nothing to read: the memory is the store.
        """

    def flush(self) -> None:
        """
        Nothing to write.
        """

    def close(self) -> None:
        """
        Nothing to let go of.
        """

    def _replace(self, jids: Iterable[str]) -> None:
        """
        Hold C{jids} and nothing else.
        """
        self._jids.clear()
        self._domains.clear()
        for jid in jids:
            self.add(jid)


@implementer(ISubscriberStore)
class SQLiteSubscriberStore(MemorySubscriberStore):
    """
    Subscribers in memory, written to an SQLite database so that a new
    store on the same file (after a restart) knows them. Rows are keyed by
    the component's JID too: several proxies may share one file.

    Writes never hold the reactor for long. Changes are collected, the
    last one for each JID winning, and written at most L{writeDelay}
    seconds after the first of them, in transactions of at most
    L{batchSize} rows, one per turn of the reactor. A transaction costs
    about 3 us a row on this kind of machine (write-ahead log, no sync at
    each commit), so a full batch holds the reactor about 3 ms, whatever a
    flood of subscriptions brings. Writing on a thread instead would need
    a connection shared across threads and a reload ordered after the
    writes in progress: more parts for a gain of a few milliseconds a
    second at worst. The memory held by changes not written yet is bounded
    by the subscriber caps: each is for a JID that is, or was at the last
    write, a subscriber.

    A failed write is logged once, and tried again every L{writeDelay}
    seconds until it succeeds, which is logged too; the changes are kept
    in memory meanwhile.

    A new file is created readable and writable by its owner only (mode
    0600; SQLite gives its journal files the same mode). An existing
    file's mode is left as it is.

    @param path: the database file, created if missing.
    @param component: the JID of the component whose subscribers these are.
    @param clock: what schedules the writes; C{None} for the global
        reactor, looked up at the first change (opening a store to check a
        file installs no reactor).
    @raise StateFileError: the file cannot be created or opened, is not an
        SQLite database, or cannot be written.
    """

    log = Logger()
    writeDelay = 1.0
    batchSize = 1000
    #: How long a write waits for another process's transaction on the
    #: same file before it fails (to be tried again later), in ms.
    busyTimeout = 50

    def __init__(
        self, path: str, component: str = "", clock: IReactorTime | None = None
    ) -> None:
        super().__init__()
        self.path = path
        self.component = component
        self.clock = clock
        #: Changes not written yet: JID -> whether it is a subscriber.
        self._pending: dict[str, bool] = {}
        self._write: IDelayedCall | None = None
        self._failing = False
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StateFileError("cannot use %s as the subscriber database: %s" % (path, e)) from e
        try:
            self._db.execute(_SCHEMA)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            # Take the write lock once: a read-only file fails now, with
            # the configuration, rather than at the first subscription.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
            self._db.execute("PRAGMA busy_timeout = %d" % (self.busyTimeout,))
            self._replace(self._read())
        except sqlite3.Error as e:
            self._db.close()
            raise StateFileError("cannot use %s as the subscriber database: %s" % (path, e)) from e

    def _read(self) -> list[str]:
        return [jid for (jid,) in self._db.execute(_SELECT, (self.component,))]

    def add(self, jid: str) -> bool:
        added = super().add(jid)
        if added:
            self._changed(jid, True)
        return added

    def remove(self, jid: str) -> bool:
        removed = super().remove(jid)
        if removed:
            self._changed(jid, False)
        return removed

    def reload(self) -> None:
        try:
            jids = dict.fromkeys(self._read())
        except sqlite3.Error as e:
            self.log.error(
                "Cannot read the subscriber database {path}: {error}", path=self.path, error=e
            )
            return
        for jid, subscribed in self._pending.items():
            if subscribed:
                jids[jid] = None
            else:
                jids.pop(jid, None)
        self._replace(jids)

    def flush(self) -> None:
        self._cancelWrite()
        if self._pending and not self._commit(list(self._pending.items())):
            self.log.error(
                "The changes for {count} subscribers are lost at the next restart",
                count=len(self._pending),
            )

    def close(self) -> None:
        self.flush()
        self._db.close()

    # Batched writes

    def _changed(self, jid: str, subscribed: bool) -> None:
        self._pending[jid] = subscribed
        if self._write is None:
            self._scheduleWrite(self.writeDelay)

    def _scheduleWrite(self, delay: float) -> None:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = cast(IReactorTime, reactor)
        self._write = self.clock.callLater(delay, self._writeBatch)

    def _cancelWrite(self) -> None:
        if self._write is not None and self._write.active():
            self._write.cancel()
        self._write = None

    def _writeBatch(self) -> None:
        """
        Write the oldest L{batchSize} changes; the rest at the next turn of
        the reactor, or all of them after L{writeDelay} if this failed.
        """
        self._write = None
        batch = list(islice(self._pending.items(), self.batchSize))
        written = self._commit(batch)
        if self._pending:
            self._scheduleWrite(0 if written else self.writeDelay)

    def _commit(self, changes: list[tuple[str, bool]]) -> bool:
        """
        Write C{changes} in one transaction and forget them.

        @return: whether they were written.
        """
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    _INSERT, [(self.component, jid) for jid, subscribed in changes if subscribed]
                )
                self._db.executemany(
                    _DELETE, [(self.component, jid) for jid, subscribed in changes if not subscribed]
                )
        except sqlite3.Error as e:
            if not self._failing:
                self._failing = True
                self.log.error(
                    "Cannot write the subscriber database {path}: {error}; trying "
                    "again every {delay} s",
                    path=self.path,
                    error=e,
                    delay=self.writeDelay,
                )
            return False
        if self._failing:
            self._failing = False
            self.log.info("The subscriber database {path} is written again", path=self.path)
        for jid, _ in changes:
            del self._pending[jid]
        return True


def openStore(
    path: str | None, component: str, clock: IReactorTime
) -> ISubscriberStore:
    """
    The store for the state file C{path}: in memory for C{None}, C{""} or
    L{IN_MEMORY}, else an SQLite database.

    @raise StateFileError: see L{SQLiteSubscriberStore}.
    """
    if not path or path == IN_MEMORY:
        return MemorySubscriberStore()
    return SQLiteSubscriberStore(path, component, clock)
