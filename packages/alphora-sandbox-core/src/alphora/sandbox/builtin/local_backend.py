"""Built-in plugin: local_backend (being written)."""
