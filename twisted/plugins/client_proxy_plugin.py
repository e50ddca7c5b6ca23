from twisted.application.service import ServiceMaker

clientProxy = ServiceMaker(
    "client-proxy",
    "client_proxy.tap",
    "Proxy every resource of one XMPP account behind a component.",
    "client-proxy",
)
