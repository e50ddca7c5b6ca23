"""
client-proxy: every online resource of one XMPP account behind a single
component address (XEP-0114), with Jabber Address Translation.
"""
