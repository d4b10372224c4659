"""alphora-sandbox-s3 plugin."""
