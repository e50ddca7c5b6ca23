"""
Private XMPP servers and the proxy as processes, for the tests and the
benchmarks alike: Prosody and ejabberd on loopback ports (L{harness.prosody},
L{harness.ejabberd}), the proxy as a C{twistd} process of the installed
package (L{harness.proxy}), a small blocking XMPP client
(L{harness.xmpp}), and process helpers (L{harness.processes}).

Not part of the installed package: C{tests/} and C{benchmarks/} import it
with the repository's root on C{sys.path}.
"""
