"""Rich-output helpers shared by the core, Docker and end-to-end tests: sandbox code (as text) that
makes real PNG, SVG and Markdown outputs with the standard library only, so no sandbox needs
matplotlib or pandas to show that the display protocol reaches the host and the model."""

from __future__ import annotations

import site

#: Python source run in a session: ``Chart(w, h)`` shows as a real PNG (made with zlib), ``Badge``
#: as SVG, ``Note`` as Markdown; each also has its repr as text/plain.
RICH_CLASSES = """
import struct as _struct, zlib as _zlib

def _png(w, h):
    raw = b"".join(b"\\x00" + b"".join(bytes((x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128))
                    for x in range(w)) for y in range(h))
    def chunk(kind, data):
        body = kind + data
        return _struct.pack(">I", len(data)) + body + _struct.pack(">I", _zlib.crc32(body) & 0xFFFFFFFF)
    ihdr = _struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", _zlib.compress(raw)) + chunk(b"IEND", b"")

class Chart:
    def __init__(self, w=8, h=6):
        self.w, self.h = w, h
    def _repr_png_(self):
        return _png(self.w, self.h)
    def __repr__(self):
        return f"<Chart {self.w}x{self.h}>"

class Badge:
    def _repr_svg_(self):
        return '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle cx="10" cy="10" r="8"/></svg>'

class Note:
    def _repr_markdown_(self):
        return "**sales** rose by *12%*"
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def host_site_packages() -> str:
    """The test venv's site-packages: a local sandbox appends it to ``sys.path`` to use the dev
    environment's real pandas and matplotlib (the sandbox's own venv does not have them)."""
    return site.getsitepackages()[0]
