"""peerpods-webhook: the mutating admission webhook for peer pods.

Pods of the peer-pods RuntimeClass (``kata-remote``) have their container resources summed
into the Kata annotations that size the pod VM, their resources cleared, and one
``kata.peerpods.io/vm`` on the first container, so that the scheduler counts pod VMs per node
instead of node CPU and memory. Upstream's webhook does the same (``src/webhook``).
"""
