"""Built-in plugin: local_storage (being written)."""
