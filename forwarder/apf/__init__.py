"""agent-protocol-forwarder: the pod VM side relay between the worker and kata-agent.

Modules: ``options`` (command line), ``tlssetup`` (server TLS context), ``relay`` (one
multiplexed ttrpc connection to kata-agent), ``interceptor`` (the few calls that are
decoded and changed), ``volumes`` (bind sources and CSI mount waits), ``daemon`` (startup,
serving and shutdown).
"""
