"""Built-in plugin: security_checks (being written)."""
