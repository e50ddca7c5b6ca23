# twistd -ny proxy.tac, configured by the environment: the CLIENT_PROXY_*
# variables of docs/options.rst, such as CLIENT_PROXY_JID,
# CLIENT_PROXY_TARGET and CLIENT_PROXY_SECRET_FILE for one proxy, or
# CLIENT_PROXY_CONFIG naming a TOML file describing any number of proxies
# (see contrib/proxy.toml.example).
from twisted.application.service import Application

from client_proxy.config import environment, load, startupWarnings
from client_proxy.tap import exitOnError, makeProcessService

with exitOnError():
    configuration = load([environment()])
application = Application("client-proxy")
makeProcessService(
    list(configuration.proxies), configuration.metrics, startupWarnings(configuration)
).setServiceParent(application)
