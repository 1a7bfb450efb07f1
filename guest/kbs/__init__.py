"""KBS protocol 0.4.0 client (Trustee): RCAR handshake, token, resources, JWE."""
