"""``python -m alphora.sandbox.runner``: run the runner in this interpreter over stdin/stdout."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    main()
