"""Rich outputs of session cells (docs/rich-outputs.md): the IPython display protocol without IPython.

One local sandbox and one session for the module. The stdlib-made objects of tests/_support/rich.py
give real PNG, SVG and Markdown; pandas and matplotlib come from the test venv (appended to the
session's ``sys.path``: the sandbox's own venv does not have them), so a DataFrame and real figures
are tested too where the dev environment provides them (noxfile's TEST_DEPS does).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from alphora.sandbox import ConfigurationError, ExecutionResult, OutputChunk, Sandbox
from alphora.sandbox.runner.display import MAX_CELL_BYTES, MAX_OUTPUT_BYTES, markdown_table
from alphora.sandbox.session import PythonSession
from tests._support.rich import PNG_SIGNATURE, RICH_CLASSES, host_site_packages
from tests.e2e.e2e_support import load_example

pytestmark = pytest.mark.asyncio(loop_scope="module")

HAVE_PANDAS = importlib.util.find_spec("pandas") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def py(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PythonSession]:
    sandbox = Sandbox.create_local(base_path=tmp_path_factory.mktemp("rich") / "sb")
    await sandbox.start()
    try:
        async with sandbox.session(figure_formats=("png", "svg")) as session:
            r = await session.run(RICH_CLASSES + f"\nimport sys\nsys.path.append({host_site_packages()!r})")
            assert r.success, r.stderr
            yield session
    finally:
        await sandbox.destroy()


def _by_mime(result_attachments: tuple) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for a in result_attachments:
        out.setdefault(a.mime_type, []).append(a)
    return out


async def test_display_and_trailing_values_give_bundles_in_order(py: PythonSession) -> None:
    chunks: list[OutputChunk] = []
    r = await py.run(
        "print('before')\n"
        "display(Note())\n"  # no import: display is in the namespace
        "display(Badge(), {'k': 1})\n"
        "class Data:\n"
        "    def _repr_json_(self): return {'rows': 3}\n"
        "    def _repr_latex_(self): return r'$x^2$'\n"
        "    def _repr_html_(self): return '<b>data</b>'\n"
        "display(Data())\n"
        "Chart(4, 3)",
        on_output=chunks.append,
    )
    assert r.success, r.stderr
    assert r.stdout == "before\n"
    assert r.value == "<Chart 4x3>"
    got = [(a.name, a.mime_type) for a in r.attachments]
    assert got == [
        ("output-2-1.md", "text/markdown"),
        ("output-2-1.txt", "text/plain"),
        ("output-2-2.svg", "image/svg+xml"),
        ("output-2-2.txt", "text/plain"),
        ("output-2-3.txt", "text/plain"),
        ("output-2-4.html", "text/html"),
        ("output-2-4.json", "application/json"),
        ("output-2-4.tex", "text/latex"),
        ("output-2-4.txt", "text/plain"),
        ("output-2-5.png", "image/png"),
        ("output-2-5.txt", "text/plain"),
    ]
    texts = {a.name: a.text for a in r.attachments if a.is_text}
    assert texts["output-2-1.md"] == "**sales** rose by *12%*"
    assert texts["output-2-2.svg"].startswith("<svg ")
    assert texts["output-2-3.txt"] == "{'k': 1}"
    assert json.loads(texts["output-2-4.json"]) == {"rows": 3}
    assert texts["output-2-4.tex"] == "$x^2$"
    png = r.attachments[9]
    assert png.data.startswith(PNG_SIGNATURE)
    assert png.is_image
    assert not png.truncated
    # streamed as they happened: one display chunk per output, the same attachments
    shown = [c for c in chunks if c.stream == "display"]
    assert len(shown) == 5
    assert tuple(a for c in shown for a in c.attachments) == r.attachments
    assert all(c.text == "" for c in shown)


async def test_session_stream_yields_display_chunks_then_the_result(py: PythonSession) -> None:
    items = [item async for item in py.stream("print('a')\ndisplay(Note())\nChart(2, 2)")]
    *chunks, result = items
    assert isinstance(result, ExecutionResult)
    assert result.success
    shown = [c for c in chunks if isinstance(c, OutputChunk) and c.stream == "display"]
    assert [[a.mime_type for a in c.attachments] for c in shown] == [
        ["text/markdown", "text/plain"],
        ["image/png", "text/plain"],
    ]
    assert "".join(c.text for c in chunks if isinstance(c, OutputChunk) and c.stream == "stdout") == "a\n"


async def test_a_plain_trailing_value_is_no_attachment(py: PythonSession) -> None:
    r = await py.run("[1, 2, 3]")
    assert r.value == "[1, 2, 3]"
    assert r.attachments == ()
    r = await py.run("_keep, display = display, 'mine'\ndisplay")  # the user's own name wins, as in IPython
    assert r.value == "'mine'"
    assert (await py.run("display = _keep\ndisplay(1)")).attachments[0].text == "1"


async def test_mimebundle_raw_and_a_broken_repr(py: PythonSession) -> None:
    r = await py.run(
        "import base64\n"
        "class Both:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/markdown': '# hi', 'image/png': base64.b64encode(Chart()._repr_png_()).decode()}, {}\n"
        "class Broken:\n"
        "    def _repr_html_(self): raise ValueError('no html today')\n"
        "    def _repr_markdown_(self): return 'still *here*'\n"
        "display(Both())\n"
        "display({'text/csv': 'a,b\\n1,2\\n'}, raw=True)\n"
        "Broken()"
    )
    assert r.success, r.stderr
    kinds = [(a.mime_type, a.name.rsplit("-", 1)[-1]) for a in r.attachments]
    assert ("image/png", "1.png") in kinds
    assert ("text/markdown", "1.md") in kinds
    png = next(a for a in r.attachments if a.mime_type == "image/png")
    assert png.data.startswith(PNG_SIGNATURE)  # base64 text in a bundle is decoded
    csv = next(a for a in r.attachments if a.mime_type == "text/csv")
    assert csv.text == "a,b\n1,2\n"
    broken = [a for a in r.attachments if a.name.startswith("output-") and a.name.split("-")[2].startswith("3")]
    assert [a.mime_type for a in broken] == ["text/markdown", "text/plain"]
    assert "Broken._repr_html_ failed: ValueError('no html today')" in r.stderr


async def test_outputs_over_the_cap_are_cut_with_a_mark(py: PythonSession) -> None:
    big = MAX_OUTPUT_BYTES + 1000
    r = await py.run(
        f"display({{'text/plain': 'x' * {big}}}, raw=True)\n"
        f"display({{'image/png': b'\\x89PNG' + bytes({big})}}, raw=True)\n"
        "Chart(2, 2)"
    )
    assert r.success, r.stderr
    text, image, small_png, _ = r.attachments
    assert text.truncated
    assert len(text.data) <= MAX_OUTPUT_BYTES
    assert text.text.endswith(f"[… output cut: {big:,} bytes, over the size cap]\n")
    assert image.truncated
    assert image.data == b""
    assert not small_png.truncated
    assert small_png.data.startswith(PNG_SIGNATURE)


async def test_a_timeout_never_cuts_a_display_frame_in_half(py: PythonSession) -> None:
    """The deadline's KeyboardInterrupt lands while big outputs are being written: the frame in
    flight is finished first, so the cell times out cleanly and the session keeps its state."""
    code = (
        "kept = 7\n"
        "display.__self__.max_cell = 1 << 40\n"  # no cell cap: every frame is big, all the time
        "while True:\n"
        "    display({'text/plain': 'y' * 300_000}, raw=True)"
    )
    try:
        r = await py.run(code, timeout=1.5)
        assert r.timed_out
        assert not r.state_lost, r.error
        assert len(r.attachments) > 5
        # past MAX_CELL_BYTES the runner and the host cut outputs themselves (the lifted cap is the
        # interpreter's own): an output not cut is whole
        assert all(a.data == b"y" * 300_000 for a in r.attachments if not a.truncated)
        assert (await py.run("kept")).value == "7"
    finally:
        await py.run(f"display.__self__.max_cell = {MAX_CELL_BYTES}")


@pytest.mark.skipif(not HAVE_PANDAS, reason="pandas is not installed in the test environment")
async def test_a_dataframe_gives_html_markdown_and_text(py: PythonSession) -> None:
    r = await py.run("import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'temp': [3.5, 19.0]})")
    assert r.success, r.stderr
    kinds = {a.mime_type: a.text for a in r.attachments}
    assert list(kinds) == ["text/html", "text/markdown", "text/plain"]
    assert "<table" in kinds["text/html"]
    assert "Oslo" in kinds["text/html"]
    assert kinds["text/markdown"] == "|  | city | temp |\n|---|---|---|\n| 0 | Oslo | 3.5 |\n| 1 | Lima | 19.0 |\n"
    assert kinds["text/plain"] == r.value


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed in the test environment")
async def test_every_figure_comes_back_including_after_show(py: PythonSession) -> None:
    r = await py.run(
        "import matplotlib.pyplot as plt\n"  # imported in this cell: show() is patched at import
        "plt.plot([1, 2, 3])\n"
        "plt.show()\n"
        "display(Note())\n"
        "plt.plot([3, 2, 1])\n"  # a new figure after show(), like a notebook
        "fig2 = plt.figure()\n"
        "plt.bar([1, 2], [3, 4])\n"
        "len(plt.get_fignums())"
    )
    assert r.success, r.stderr
    assert r.value == "2"  # the shown figure was closed
    kinds = [a.mime_type for a in r.attachments]
    assert kinds == [
        "image/png",
        "image/svg+xml",
        "text/markdown",
        "text/plain",
        "image/png",
        "image/svg+xml",
        "image/png",
        "image/svg+xml",
    ]
    pngs = [a for a in r.attachments if a.mime_type == "image/png"]
    assert all(a.data.startswith(PNG_SIGNATURE) and len(a.data) > 1000 for a in pngs)
    assert len({a.data for a in pngs}) == 3
    assert "<svg" in r.attachments[1].text
    r = await py.run("fig, ax = plt.subplots()\nax.plot([0, 1])\nfig")  # a figure as the value: shown once
    assert [a.mime_type for a in r.attachments] == ["image/png", "image/svg+xml"]
    assert (await py.run("len(plt.get_fignums())")).value == "0"


async def test_figure_formats_are_checked(tmp_path: Path) -> None:
    sandbox = Sandbox.create_local(base_path=tmp_path / "sb")
    await sandbox.start()
    try:
        with pytest.raises(
            ConfigurationError, match=r"figure_formats must name one or more of png, svg; got \('jpg',\)"
        ):
            async with sandbox.session(figure_formats=("jpg",)):
                pass
        async with sandbox.session(figure_formats="SVG") as session:
            assert session.figure_formats == ("svg",)
            with pytest.raises(ConfigurationError, match="figure_formats"):
                session.figure_formats = ()
    finally:
        await sandbox.destroy()


async def test_markdown_table_elides_long_and_wide_frames() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed in the test environment")
    df = pd.DataFrame({f"c{i}": range(10) for i in range(4)})
    table = markdown_table(df, max_rows=4, max_cols=2)
    lines = table.splitlines()
    assert lines[0] == "|  | c0 | c1 | … |"
    assert lines[4] == "| … | … | … | … |"
    assert lines[-1] == "10 rows x 4 columns"
    assert markdown_table(pd.DataFrame({"a|b": ["x\ny"]})).splitlines()[2] == "| 0 | x y |"


@pytest.mark.skipif(not (HAVE_PANDAS and HAVE_MPL), reason="pandas and matplotlib are not installed here")
async def test_the_rich_outputs_example_gives_dataframe_svg_markdown_and_png(py: PythonSession) -> None:
    """examples/rich_outputs.py's cell, in this module's session (pandas and matplotlib from the dev env)."""
    example = load_example("rich_outputs")
    r = await py.run(example.CELL, timeout=120)
    assert r.success, r.stderr
    print("\n".join(example.describe(r)))  # shown with -s: the "must show" table
    kinds = [a.mime_type for a in r.attachments]
    assert kinds == [
        "image/svg+xml",  # Thermometer
        "text/plain",
        "text/markdown",  # the raw Markdown
        "image/png",  # the bar chart
        "image/svg+xml",
        "text/html",  # the DataFrame
        "text/markdown",
        "text/plain",
    ]
    svg, _, md, png, fig_svg, html, table, text = r.attachments
    assert svg.text.startswith("<svg ")
    assert 'height="82"' in svg.text
    assert md.text == "Warmest: **Pune**"
    assert png.data.startswith(PNG_SIGNATURE)
    assert "<svg" in fig_svg.text
    assert "<table" in html.text
    assert "| 2 | Pune | 27.5 |" in table.text
    assert text.text == r.value
