"""Rich outputs from one session: a DataFrame, an SVG, Markdown and a matplotlib PNG.

Run it::

    pip install alphora-sandbox
    python examples/rich_outputs.py [OUT_DIR]

It prints one line per output and writes each to OUT_DIR (default ``rich-outputs``). pandas and
matplotlib must be installed in the sandbox's own environment (a sandbox never sees your
packages): the example installs them first when they are missing, which needs the package index.
``tests/core/test_rich_outputs.py`` runs ``CELL`` and ``describe`` from this file.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alphora.sandbox import ExecutionResult, Sandbox

CELL = """
import pandas as pd
import matplotlib.pyplot as plt

df = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp": [3.5, 19.0, 27.5]})

class Thermometer:                      # any object with _repr_svg_ shows as SVG
    def __init__(self, t):
        self.t = t
    def _repr_svg_(self):
        h = int(self.t * 3)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="30" height="100">'
                f'<rect x="10" y="{100 - h}" width="10" height="{h}" fill="red"/></svg>')

display(Thermometer(df.temp.max()))     # display() needs no import in a session
display({"text/markdown": f"Warmest: **{df.city[df.temp.idxmax()]}**"}, raw=True)
df.plot.bar(x="city", y="temp", legend=False)
plt.show()                              # the figure: PNG (and SVG, as the session asks)
df                                      # the trailing value: HTML, Markdown and text
"""


def describe(result: ExecutionResult) -> list[str]:
    """One line per attachment: name, MIME type, size, and the start of text outputs."""
    lines = []
    for a in result.attachments:
        head = a.text.splitlines()[0][:60] if a.is_text and a.data else ""
        lines.append(f"{a.name:22} {a.mime_type:15} {len(a.data):7,} bytes  {head}")
    return lines


async def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the sandbox starts
    async with Sandbox.create_local() as sandbox:
        missing = [p for p in ("pandas", "matplotlib") if not await sandbox.package_installed(p)]
        if missing:
            (await sandbox.install_packages(missing)).raise_for_status()
        async with sandbox.session(figure_formats=("png", "svg")) as py:
            result = await py.run(CELL, timeout=120)
        result.raise_for_status()
        for line, attachment in zip(describe(result), result.attachments, strict=True):
            print(line)
            await asyncio.to_thread((out_dir / attachment.name).write_bytes, attachment.data)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "rich-outputs")))
