"""``python -m alphora.sandbox_docker build|images|prune``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
