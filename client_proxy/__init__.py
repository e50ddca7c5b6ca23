"""
client-proxy: every online resource of one XMPP account behind a single
component address (XEP-0114), with Jabber Address Translation.
"""

#: The version of client-proxy, the one place it is written: setup.cfg
#: reads it (C{version = attr: client_proxy.__version__}), and
#: C{twistd client-proxy --version} and the metrics report it.
__version__ = "0.1.0"
