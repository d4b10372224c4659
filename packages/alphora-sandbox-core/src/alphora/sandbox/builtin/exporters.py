"""Built-in plugin: exporters (being written)."""
