"""Plugin registration for alphora-sandbox-s3 (being written)."""
