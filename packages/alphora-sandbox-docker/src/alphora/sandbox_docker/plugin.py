"""Plugin registration for alphora-sandbox-docker (being written)."""
