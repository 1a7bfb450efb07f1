"""The pod network, one library for both ends of the tunnel: network-namespace helpers, the
command runner for ``ip``/``tc``/``iptables``, upstream's NOTRACK rules and one
:class:`~podnetwork.errors.PodNetworkError`. The worker end lives in ``adaptor.network``, the
pod VM end in ``forwarder.podnetwork``; both build on this package and on nothing of each
other.
"""
