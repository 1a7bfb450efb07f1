"""Test doubles at the network edges: an in-memory cloud provider, a test forwarder that
serves what a pod VM would from its user-data, and a test kata agent."""
