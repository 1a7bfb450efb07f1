"""confidential-data-hub: resources, sealed secrets and secure mounts over ttrpc."""
