"""Pod-VM guest components: Python equivalents of guest-components' attestation-agent,
confidential-data-hub and api-server-rest, with exactly their interfaces (sockets, ttrpc
services, HTTP routes, config keys), speaking KBS protocol 0.4.0 to Trustee.

Layering: imports ``protocols`` and ``runtime`` only; never ``adaptor`` or ``providers``.
"""
