"""Cloud provider drivers behind the Provider contract in ``providers.base``."""
