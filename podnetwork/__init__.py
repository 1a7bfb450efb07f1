"""The pod network, one library for both ends of the tunnel.

- ``commands``: the runner for ``ip``/``tc``/``iptables``; ``netns``: netlink sockets in
  another namespace; ``links``: the netlink helpers both ends use (links, addresses, the
  default route, VXLAN devices); ``tc``: the layer-2 redirects; ``notrack``: upstream's
  NOTRACK rules;
- ``plan``: the values an end's plan is made of; ``steps``: applying a plan as small steps
  with undo, and a teardown that tries every removal and reports what failed;
- one :class:`~podnetwork.errors.PodNetworkError`.

The worker end lives in ``adaptor.network``, the pod VM end in ``forwarder.podnetwork``;
both build on this package and on nothing of each other.
"""
