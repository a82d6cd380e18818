"""Talking to OCI registries: the Distribution API client and its auth."""
