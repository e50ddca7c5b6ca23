# twistd -ny proxy.tac, configured by the environment: the CLIENT_PROXY_*
# variables of docs/options.rst, such as CLIENT_PROXY_JID,
# CLIENT_PROXY_TARGET and CLIENT_PROXY_SECRET_FILE for one proxy, or
# CLIENT_PROXY_CONFIG naming a TOML file describing any number of proxies
# (twistd client-proxy --example-config prints an example). On SIGHUP the configuration is read
# again (the files it names; the environment of a running process stays
# what it was).
from twisted.application.service import Application

from client_proxy.config import environment, load, startupWarnings
from client_proxy.tap import exitOnError, makeProcessService


def readConfiguration():
    return load([environment()])


with exitOnError():
    configuration = readConfiguration()
application = Application("client-proxy")
makeProcessService(
    configuration, startupWarnings(configuration), readConfiguration
).setServiceParent(application)
