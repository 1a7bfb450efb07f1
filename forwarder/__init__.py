"""Pod VM side: agent-protocol-forwarder, pod network, process-user-data, attestation."""
