"""
A consistent-hash ring: pure state, free of I/O.

Each member of the ring has a number of points, positions in [0, 2**64)
derived from its name alone; a key at position C{h} belongs to the member
of the first point at or after C{h}, going round (Karger et al., 1997). So
the owner of a key depends only on the members, never on the order they
came in or on the process: every proxy reading the same members agrees.
When a member leaves, only its keys move, each to the owner of the next
point; when one joins, it takes keys for itself alone, about 1/(n+1) of
them with n members already there.
"""

import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from hashlib import shake_128


def shakePositions(count: int) -> Callable[[str], Iterable[int]]:
    """
    The points of a member: C{count} positions read from the SHAKE-128
    digest of its name (a stable hash, the same in every process, unlike
    C{hash()}).
    """
    unpack = struct.Struct(">%dQ" % (count,)).unpack

    def positions(member: str) -> Iterable[int]:
        return unpack(shake_128(member.encode("utf-8")).digest(8 * count))

    return positions


class HashRing:
    """
    The members of a consistent-hash ring, and the owner of any position.

    The points are kept sorted in chunks of at most L{chunk} positions (an
    array of 64-bit positions, and the list of their members beside it), so
    that finding a position's owner is two bisections, and a member joining
    or leaving costs a bisection and a copy of at most a few kilobytes for
    each of its points, however large the ring.

    Two points at the same position (a chance of about n**2 / 2**65 for n
    points) are ordered by their members' names: the ring keeps the point
    of the smallest name and remembers the others, which take its place
    when it leaves.

    @ivar chunk: the most points in one chunk.
    """

    chunk = 256

    def __init__(self, positions: Callable[[str], Iterable[int]]) -> None:
        """
        @param positions: the points of a member, from its name alone.
        """
        self._positionsOf = positions
        self._members: set[str] = set()
        self._maxes: list[int] = []  # the last position of each chunk
        self._points: list[array] = []
        self._owners: list[list[str]] = []
        self._shadowed: dict[int, list[str]] = {}

    def __contains__(self, member: str) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: str) -> None:
        if member in self._members:
            return
        self._members.add(member)
        maxes, chunks, owners = self._maxes, self._points, self._owners
        for position in set(self._positionsOf(member)):
            c = bisect_left(maxes, position)
            if c == len(maxes):
                if not maxes:
                    self._start(position, member)
                    continue
                c -= 1
            points = chunks[c]
            i = bisect_left(points, position)
            if i < len(points) and points[i] == position:
                self._shadow(position, owners[c], i, member)
                continue
            points.insert(i, position)
            owners[c].insert(i, member)
            if len(points) > self.chunk:
                self._split(c)
            elif i == len(points) - 1:
                maxes[c] = position

    def remove(self, member: str) -> None:
        if member not in self._members:
            return
        self._members.remove(member)
        maxes, chunks, owners = self._maxes, self._points, self._owners
        for position in set(self._positionsOf(member)):
            c = bisect_left(maxes, position)
            points = chunks[c]
            i = bisect_left(points, position)
            if position in self._shadowed:
                self._unshadow(position, owners[c], i, member)
                continue
            del points[i]
            del owners[c][i]
            if not points:
                del maxes[c], chunks[c], owners[c]
            elif i == len(points):
                maxes[c] = points[-1]

    def owner(self, position: int, exclude: str | None = None) -> str | None:
        """
        The member of the first point at or after C{position}, going round,
        in the ring without C{exclude}: C{None} if that ring is empty.
        """
        maxes = self._maxes
        c = bisect_left(maxes, position)
        if c == len(maxes):
            if not maxes:
                return None
            c, i = 0, 0
        else:
            i = bisect_left(self._points[c], position)
        owner = self._owners[c][i]
        if owner != exclude:
            return owner
        return self._ownerAfter(c, i, owner)

    def ownerAmong(
        self, position: int, among: Callable[[str], bool], exclude: str | None = None
    ) -> str | None:
        """
        The owner of C{position} in the ring of the members C{among}
        accepts, without C{exclude}: the same points, the others' passed
        over. That is L{owner} of a ring holding just those members, so
        either may serve a subset of the members, and change places with
        the other without moving a key.

        A step per point passed over: about n / k steps for k members
        accepted of n, and a full round (every point) when none is.
        """
        maxes = self._maxes
        if not maxes:
            return None
        points, owners, shadowed = self._points, self._owners, self._shadowed
        c = bisect_left(maxes, position)
        if c == len(maxes):
            c, i = 0, 0
        else:
            i = bisect_left(points[c], position)
        start = (c, i)
        while True:
            owner = owners[c][i]
            if owner != exclude and among(owner):
                # The smallest name of those at its position: of those
                # accepted, too.
                return owner
            if shadowed:
                others = [
                    m for m in shadowed.get(points[c][i], ()) if m != exclude and among(m)
                ]
                if others:
                    return min(others)
            i += 1
            if i == len(points[c]):
                c, i = (c + 1) % len(points), 0
            if (c, i) == start:
                return None

    def _ownerAfter(self, c: int, i: int, exclude: str) -> str | None:
        """
        The first member but C{exclude}, an owner, from point C{i} of chunk
        C{c} on: C{exclude} has a few points, so that is a few steps.
        """
        if len(self._members) == 1:
            return None
        points, owners = self._points, self._owners
        while True:
            others = [m for m in self._shadowed.get(points[c][i], ()) if m != exclude]
            if others:
                return min(others)
            i += 1
            if i == len(points[c]):
                c, i = (c + 1) % len(points), 0
            if owners[c][i] != exclude:
                return owners[c][i]

    def _start(self, position: int, member: str) -> None:
        """
        The first point of an empty ring.
        """
        self._maxes.append(position)
        self._points.append(array("Q", [position]))
        self._owners.append([member])

    def _split(self, c: int) -> None:
        """
        Chunk C{c} is too long: cut it in two.
        """
        points, owners = self._points[c], self._owners[c]
        half = len(points) // 2
        self._points[c : c + 1] = [points[:half], points[half:]]
        self._owners[c : c + 1] = [owners[:half], owners[half:]]
        self._maxes[c : c + 1] = [points[half - 1], points[-1]]

    def _shadow(self, position: int, owners: list[str], i: int, member: str) -> None:
        """
        C{member} has a point at C{position}, where point C{i} of a chunk
        whose members are C{owners} is already: the smaller name owns it.
        """
        if member < owners[i]:
            member, owners[i] = owners[i], member
        self._shadowed.setdefault(position, []).append(member)

    def _unshadow(self, position: int, owners: list[str], i: int, member: str) -> None:
        """
        C{member} leaves C{position}, shared with others (see L{_shadow}).
        """
        others = self._shadowed.pop(position)
        if owners[i] == member:
            owners[i] = member = min(others)
        others.remove(member)
        if others:
            self._shadowed[position] = others
