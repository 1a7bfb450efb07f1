"""Kubernetes integration of the adaptor (node extended resource, PeerPod objects,
image-pull secrets, the startup probe's view of the node's peer pods) and ``peerpod-ctrl``.

Everything here talks to the API server through :mod:`k8s.access`, off the hot path: the
adaptor's CreateVM/StartVM/StopVM never wait for the API server. Needs the ``kube`` extra.
"""
