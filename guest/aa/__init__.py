"""attestation-agent: evidence and tokens over ttrpc, guest-components' interface."""
