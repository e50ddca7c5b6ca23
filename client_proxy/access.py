"""
Who may use a proxy: pure logic, free of I/O.

By default everyone may, as with mod_client_proxy: the component answers
any user of any server that federates with its own. An allow list narrows
that to the bare JIDs and domains it names; a deny list shuts out the bare
JIDs and domains it names, and wins over the allow list. The target is
always allowed: the proxy exists to serve it.
"""

from collections.abc import Iterable

from client_proxy.jat import bareAndDomain


class AccessPolicy:
    """
    Decides whether an entity may use the proxy.

    Entries are bare JIDs (C{user@example.org}) or domains
    (C{example.org}); an entry for a domain covers every JID of that
    domain, its own included, but not its subdomains. Addresses are
    compared as the server wrote them, already through stringprep (RFC
    6120, 8.1.1); entries are expected in the same form (see
    L{client_proxy.config}).

    @ivar target: the target's bare JID, always allowed.
    """

    def __init__(
        self, target: str, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> None:
        self.target = target
        self._allow = frozenset(allow)
        self._deny = frozenset(deny)

    def allows(self, sender: str) -> bool:
        """
        Whether C{sender}, a full or bare JID, may use the proxy.
        """
        if not (self._deny or self._allow):
            return True
        jid, host = bareAndDomain(sender)
        if jid == self.target:
            return True
        if jid in self._deny or host in self._deny:
            return False
        return not self._allow or jid in self._allow or host in self._allow
