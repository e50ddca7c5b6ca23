"""
Quiet logs: what remote senders cause is counted, then summarised.

Anyone on the federated network can make the component refuse a request,
drop an answer or time a request out, as often as they like. One log line
each would let them fill the journal, with their JIDs in it. So such
events are counted by kind and by the sender's domain, and said once a
period in a bounded number of lines::

    refused 4,812 requests from 37 JIDs of evil.example in the last 60 s:
    per-domain limit

The memory a L{Tally} holds is bounded too, whoever sends: at most
L{Tally.maxGroups} groups, each tracking at most L{Tally.maxSenders}
distinct senders; beyond them, events are still counted, in a group for
"other domains", and distinct senders shown as a lower bound.
"""

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from client_proxy.jat import domain

#: The domain of the group that takes events once L{Tally.maxGroups} is
#: reached.
OTHER_DOMAINS = "other domains"


class _Group:
    """
    Events of one kind from one domain in the current period.
    """

    __slots__ = ("count", "senders", "sendersCapped")

    def __init__(self) -> None:
        self.count = 0
        self.senders: set[str] = set()
        self.sendersCapped = False


class Tally:
    """
    Counts events caused by remote senders and logs a summary of them at
    most once every C{period} seconds, in at most C{maxLines} lines.

    No timer runs while nothing happens: the first event of a period arms
    it.

    @ivar proxy: the proxy's JID, named in every line.
    """

    maxGroups = 1000
    maxSenders = 1000

    def __init__(
        self,
        proxy: str,
        clock: IReactorTime,
        log: Logger,
        period: float = 60.0,
        maxLines: int = 10,
    ) -> None:
        self.proxy = proxy
        self.clock = clock
        self.log = log
        self.period = period
        self.maxLines = maxLines
        self._groups: dict[tuple[str, str, str, str], _Group] = {}
        self._flush: IDelayedCall | None = None

    def count(self, action: str, noun: str, reason: str, sender: str) -> None:
        """
        One event: C{action} (C{"refused"}) one of C{noun} (C{"requests"})
        from C{sender}, a JID, for C{reason} (C{"per-domain limit"}).
        """
        key = (action, noun, reason, domain(sender))
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.maxGroups:
                key = (action, noun, reason, OTHER_DOMAINS)
                group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group()
        group.count += 1
        if len(group.senders) < self.maxSenders:
            group.senders.add(sender)
        elif sender not in group.senders:
            group.sendersCapped = True
        if self._flush is None:
            self._flush = self.clock.callLater(self.period, self.flush)

    def flush(self) -> None:
        """
        Log the summary of the events counted so far, and start afresh.
        """
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        groups = sorted(self._groups.items(), key=lambda item: -item[1].count)
        self._groups = {}
        for (action, noun, reason, where), group in groups[: self.maxLines]:
            self.log.info(
                "{proxy}: {action} {count:,} {noun} from {senders}{capped} JIDs of "
                "{domain} in the last {period:.0f} s: {reason}",
                proxy=self.proxy,
                action=action,
                count=group.count,
                noun=noun,
                senders=len(group.senders),
                capped="+" if group.sendersCapped else "",
                domain=where,
                period=self.period,
                reason=reason,
                event="summary",
            )
        rest = groups[self.maxLines :]
        if rest:
            self.log.info(
                "{proxy}: and {count:,} more events in {groups} other groups in the "
                "last {period:.0f} s",
                proxy=self.proxy,
                count=sum(group.count for _, group in rest),
                groups=len(rest),
                period=self.period,
                event="summary",
            )
