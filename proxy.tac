# twistd -ny proxy.tac, configured by the environment: either
# CLIENT_PROXY_CONFIG, a TOML file describing any number of proxies (see
# contrib/proxy.toml.example), or, for one proxy, CLIENT_PROXY_JID,
# CLIENT_PROXY_TARGET, CLIENT_PROXY_SECRET_FILE (or CLIENT_PROXY_SECRET),
# CLIENT_PROXY_ENDPOINT and the others in README.rst. CLIENT_PROXY_METRICS,
# a Twisted server endpoint, serves Prometheus metrics at /metrics.
from twisted.application.service import Application

from client_proxy.config import ConfigError, metricsFromEnvironment, proxiesFromEnvironment
from client_proxy.service import makeProxiesService

try:
    configs = proxiesFromEnvironment()
    metrics = metricsFromEnvironment()
except ConfigError as e:
    # SystemExit passes through twistd's loader, which would print a
    # traceback for any other exception.
    raise SystemExit("client-proxy: %s" % (e,))

application = Application("client-proxy")
makeProxiesService(configs, metrics=metrics).setServiceParent(application)
