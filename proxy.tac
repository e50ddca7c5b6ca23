# twistd -ny proxy.tac, configured by the environment:
# CLIENT_PROXY_JID, CLIENT_PROXY_TARGET, CLIENT_PROXY_SECRET_FILE (or
# CLIENT_PROXY_SECRET), CLIENT_PROXY_ENDPOINT and the others in README.rst.
from twisted.application.service import Application

from client_proxy.config import ConfigError, fromEnvironment
from client_proxy.service import makeService

try:
    config = fromEnvironment()
except ConfigError as e:
    # SystemExit passes through twistd's loader, which would print a
    # traceback for any other exception.
    raise SystemExit("client-proxy: %s" % (e,))

application = Application("client-proxy")
makeService(config).setServiceParent(application)
