"""Rich outputs of session cells: the IPython display protocol, without IPython.

Part of the runner program (stdlib only, Python 3.8+; pandas and matplotlib are used only when user
code already imported them). The session interpreter (:mod:`.kernel`) owns one :class:`Display`:

* ``display(obj, ...)`` (in every session's namespace, no import needed) and the cell's trailing
  expression turn an object into a MIME bundle: ``_repr_mimebundle_``, then ``_repr_png_``,
  ``_repr_jpeg_``, ``_repr_svg_``, ``_repr_html_``, ``_repr_markdown_``, ``_repr_json_``,
  ``_repr_latex_``, and ``text/plain`` (its repr). A pandas DataFrame adds a Markdown table to its own
  HTML and plain-text forms; a matplotlib figure becomes PNG (and SVG when the session asks for it).
* every open pyplot figure is rendered at ``plt.show()`` and at the end of the cell, then closed.
* each output goes to the runner at once (an ``ev: display`` frame on the kernel's reply pipe; the
  runner streams it to the host), so the host gets outputs in order while the cell runs.
* each output is capped (:data:`MAX_OUTPUT_BYTES`) and so is a cell's total
  (:data:`MAX_CELL_BYTES`): cut text ends with a mark saying how much was cut; an image over the cap
  is left out (empty data) and flagged ``truncated``.
"""

# Display must never break a cell: a broken _repr_*_ is reported on stderr and skipped.
# ruff: noqa: BLE001

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .protocol import EV_DISPLAY

__all__ = [
    "FIGURE_FORMATS",
    "MAX_BUNDLE_TYPES",
    "MAX_CELL_BYTES",
    "MAX_CELL_OUTPUTS",
    "MAX_OUTPUT_BYTES",
    "MIME_EXTENSIONS",
    "Display",
    "OutputBudget",
    "is_text_mime",
    "markdown_table",
]

#: the figure formats a session may ask for (``figure_formats``), in the order they are emitted
FIGURE_FORMATS = ("png", "svg")
#: the largest single output (bytes of its data); more is cut (text) or left out (images)
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
#: the most output data one cell returns, all outputs together
MAX_CELL_BYTES = 16 * 1024 * 1024
#: the most outputs (displayed objects, figures, the trailing expression) of one cell; later ones are dropped
MAX_CELL_OUTPUTS = 1000
#: the most MIME types one output carries (``_repr_mimebundle_`` may return any number)
MAX_BUNDLE_TYPES = 16

#: the ``_repr_*_`` methods, in the order their MIME types are emitted (text/plain comes last)
_REPR_METHODS = (
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("image/svg+xml", "_repr_svg_"),
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("application/json", "_repr_json_"),
    ("text/latex", "_repr_latex_"),
)
_ORDER = [m for m, _ in _REPR_METHODS] + ["text/plain"]

#: file extension of an output's name, by MIME type
MIME_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/svg+xml": "svg",
    "text/html": "html",
    "text/markdown": "md",
    "application/json": "json",
    "text/latex": "tex",
    "text/plain": "txt",
}

#: rows and columns of a DataFrame's Markdown table (more are elided with a "…" row/column)
_MD_ROWS = 30
_MD_COLS = 20


def is_text_mime(mime: str) -> bool:
    """Whether outputs of this MIME type are text (carried as UTF-8 bytes)."""
    return (
        mime.startswith("text/")
        or mime in ("image/svg+xml", "application/json", "application/javascript")
        or mime.endswith(("+json", "+xml"))
    )


def _as_bytes(mime: str, value: Any) -> bytes | None:
    """A ``_repr_*_`` return value as the bytes of its MIME type (None: nothing to show)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        value = value[0]  # (data, metadata)
    if value is None:
        return None
    if mime == "application/json" or mime.endswith("+json"):
        if isinstance(value, (bytes, str)):
            return value.encode("utf-8") if isinstance(value, str) else value
        # a MIME payload, not a frame (frames are protocol.py's): the object as JSON text
        return json.JSONEncoder(ensure_ascii=False, default=str).encode(value).encode("utf-8")
    if is_text_mime(mime):
        if isinstance(value, bytes):
            return value
        return str(value).encode("utf-8", "backslashreplace")
    if isinstance(value, str):  # binary types given as base64 text (as Jupyter carries them)
        try:
            return base64.b64decode(value.encode("ascii"), validate=False)
        except Exception:
            return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _md_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(df: Any, max_rows: int = _MD_ROWS, max_cols: int = _MD_COLS) -> str:
    """A pandas DataFrame as a GitHub-flavoured Markdown table (index first), without tabulate.

    Long frames keep their head and tail with a ``…`` row between; wide ones their first columns
    and a ``…`` column; a last line gives the shape when anything was left out."""
    nrows, ncols = df.shape
    cols = list(df.columns[:max_cols])
    wide = ncols > max_cols
    if nrows > max_rows:
        half = max_rows // 2
        parts = [df.iloc[:half], None, df.iloc[nrows - half :]]
    else:
        parts = [df]
    index_name = df.index.name if df.index.name is not None else ""
    header = [_md_cell(index_name)] + [_md_cell(c) for c in cols] + (["…"] if wide else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for part in parts:
        if part is None:
            lines.append("| " + " | ".join(["…"] * len(header)) + " |")
            continue
        for label, row in zip(part.index, part[cols].itertuples(index=False, name=None)):  # noqa: B905 (3.8+)
            cells = [_md_cell(label)] + [_md_cell(v) for v in row] + (["…"] if wide else [])
            lines.append("| " + " | ".join(cells) + " |")
    if nrows > max_rows or wide:
        lines.append("")
        lines.append(f"{nrows} rows x {ncols} columns")
    return "\n".join(lines) + "\n"


def _is_dataframe(obj: Any) -> bool:
    pd = sys.modules.get("pandas")  # imported by user code, or obj is no DataFrame
    return pd is not None and isinstance(obj, getattr(pd, "DataFrame", ()))


def _is_figure(obj: Any) -> bool:
    mod = sys.modules.get("matplotlib.figure")
    return mod is not None and isinstance(obj, getattr(mod, "Figure", ()))


class OutputBudget:
    """The caps of one cell's outputs, applied again OUTSIDE the session interpreter (by the runner,
    and by the host as its outputs arrive): the interpreter's :class:`Display` lives in the memory of
    the code it runs, which can lift its caps (``display.__self__.max_cell = 10**12``) or write
    display frames of its own, so only these copies bound what reaches the host."""

    #: the name of the one extra output that says later outputs were dropped
    DROPPED = "outputs-dropped.txt"

    def __init__(self) -> None:
        self.used = 0
        self.count = 0
        self.dropped = 0

    def admit(self, items: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes, bool]] | None:
        """One output (its MIME types and their data) within the caps: ``(mime, data, cut)`` for each
        of at most :data:`MAX_BUNDLE_TYPES` MIME types (cut: truncated here); None when the cell
        already has :data:`MAX_CELL_OUTPUTS` outputs (then see :meth:`drop_mark`)."""
        if self.count >= MAX_CELL_OUTPUTS:
            self.dropped += 1
            return None
        self.count += 1
        out = []
        for mime, data in items[:MAX_BUNDLE_TYPES]:
            room = max(0, min(MAX_OUTPUT_BYTES, MAX_CELL_BYTES - self.used))
            cut = len(data) > room
            if cut:
                data = Display._cut(mime, data, room)
            self.used += len(data)
            out.append((mime, data, cut))
        return out

    def drop_mark(self) -> bytes | None:
        """The text of the output that says later outputs were dropped: at the first drop only."""
        return _dropped_mark() if self.dropped == 1 else None


def _dropped_mark() -> bytes:
    return f"[… further outputs of this cell dropped: more than {MAX_CELL_OUTPUTS} outputs]\n".encode()


class Display:
    """The display machinery of one session interpreter (see the module docstring)."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send  # delivers one frame to the runner
        self.figure_formats: Sequence[str] = ("png",)
        self.max_output = MAX_OUTPUT_BYTES
        self.max_cell = MAX_CELL_BYTES
        self.used = 0
        self.count = 0  # outputs of this cell
        self.cell = 0

    def begin(self, cell: int, options: dict[str, Any] | None) -> None:
        """A new cell: reset the counters and take the host's options for it (``figure_formats``)."""
        options = options or {}
        formats = [f for f in options.get("figure_formats") or ("png",) if f in FIGURE_FORMATS]
        self.figure_formats = formats or ["png"]
        self.used = 0
        self.count = 0
        self.cell = cell

    # -- bundles -----------------------------------------------------------------------------------

    def figure_bundle(self, fig: Any) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for fmt in self.figure_formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            out.append(("image/png" if fmt == "png" else "image/svg+xml", buf.getvalue()))
        return out

    def bundle(self, obj: Any) -> list[tuple[str, bytes]]:
        """The MIME bundle of ``obj``: rich types first, ``text/plain`` last."""
        if _is_figure(obj):
            bundle = self.figure_bundle(obj)
            self._close_figure(obj)  # shown: not again at the end of the cell
            return bundle
        found: dict[str, bytes] = {}
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method) and not isinstance(obj, type):
            try:
                data = method(include=None, exclude=None)
                if isinstance(data, tuple):
                    data = data[0]
                for mime, value in dict(data or {}).items():
                    raw = _as_bytes(str(mime), value)
                    if raw is not None:
                        found[str(mime)] = raw
            except Exception as exc:
                self._warn("_repr_mimebundle_", obj, exc)
        for mime, name in _REPR_METHODS:
            if mime in found or isinstance(obj, type):
                continue
            method = getattr(obj, name, None)
            if not callable(method):
                continue
            try:
                raw = _as_bytes(mime, method())
            except Exception as exc:
                self._warn(name, obj, exc)
                continue
            if raw is not None:
                found[mime] = raw
        if _is_dataframe(obj) and "text/markdown" not in found:
            try:
                found["text/markdown"] = markdown_table(obj).encode("utf-8")
            except Exception as exc:
                self._warn("markdown_table", obj, exc)
        if "text/plain" not in found:
            try:
                found["text/plain"] = repr(obj).encode("utf-8", "backslashreplace")
            except Exception as exc:
                self._warn("__repr__", obj, exc)
        rank = {m: i for i, m in enumerate(_ORDER)}
        return sorted(found.items(), key=lambda kv: rank.get(kv[0], len(_ORDER) - 1))

    @staticmethod
    def _warn(what: str, obj: Any, exc: BaseException) -> None:
        try:
            sys.stderr.write(f"[display: {type(obj).__name__}.{what} failed: {exc!r}]\n")
        except Exception:
            pass

    # -- emitting ----------------------------------------------------------------------------------

    def emit(self, bundle: list[tuple[str, bytes]], stem: str = "") -> None:
        """Cap, name and send one output (all MIME types of one object, sharing a name stem)."""
        if not bundle or self.count > MAX_CELL_OUTPUTS:
            return
        self.count += 1
        if self.count > MAX_CELL_OUTPUTS:  # the first one too many: say so, once (the runner does the same)
            stem, bundle = OutputBudget.DROPPED[:-4], [("text/plain", _dropped_mark())]
        stem = stem or f"output-{self.cell}-{self.count}"
        items = []
        for mime, data in bundle[:MAX_BUNDLE_TYPES]:
            room = max(0, min(self.max_output, self.max_cell - self.used))
            truncated = len(data) > room
            if truncated:
                data = self._cut(mime, data, room)
            self.used += len(data)
            items.append(
                {
                    "mime_type": mime,
                    "name": f"{stem}.{MIME_EXTENSIONS.get(mime, 'bin')}",
                    "data": base64.b64encode(data).decode("ascii"),
                    "truncated": truncated,
                }
            )
        for s in (sys.stdout, sys.stderr):  # what was printed before comes before this output
            try:
                s.flush()
            except Exception:
                pass
        self.send({"ev": EV_DISPLAY, "a": items})

    @staticmethod
    def _cut(mime: str, data: bytes, room: int) -> bytes:
        if not is_text_mime(mime):
            return b""  # half an image is no image
        mark = f"\n[… output cut: {len(data):,} bytes, over the size cap]\n".encode()
        keep = max(0, room - len(mark))
        return data[:keep].decode("utf-8", "ignore").encode("utf-8") + mark

    def display(self, *objs: Any, raw: bool = False, **_ignored: Any) -> None:
        """``display(obj, ...)``: show each object as a rich output (like IPython's). With
        ``raw=True`` each object is a ``{mime_type: data}`` dict used as is."""
        for obj in objs:
            if raw and isinstance(obj, dict):
                bundle = [(str(m), b) for m, v in obj.items() for b in [_as_bytes(str(m), v)] if b is not None]
            else:
                bundle = self.bundle(obj)
            self.emit(bundle)

    def result(self, value: Any) -> None:
        """The cell's trailing expression: an output only when it has more than its repr (the repr
        is the result's ``value`` already)."""
        bundle = self.bundle(value)
        if any(mime != "text/plain" for mime, _ in bundle):
            self.emit(bundle)

    # -- matplotlib --------------------------------------------------------------------------------

    def _close_figure(self, fig: Any) -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            try:
                plt.close(fig)
            except Exception:
                pass

    def figures(self) -> None:
        """Show every open pyplot figure (in figure-number order) and close them."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        for num in plt.get_fignums():
            fig = plt.figure(num)
            self.emit(self.figure_bundle(fig), stem=f"figure-{self.cell}-{self.count + 1}")
        plt.close("all")

    def show(self, *args: Any, **kwargs: Any) -> None:
        """Replaces ``matplotlib.pyplot.show``: the figures are output now, then closed."""
        try:
            self.figures()
        except Exception as exc:
            self._warn("show", self, exc)


class PyplotHook:
    """A meta-path finder that patches ``matplotlib.pyplot.show`` the moment pyplot is imported, so
    ``plt.show()`` outputs the figures even in the cell that imports pyplot."""

    def __init__(self, show: Callable[..., None]) -> None:
        def _show(*args: Any, **kwargs: Any) -> None:  # a function: pyplot sets its __signature__
            show(*args, **kwargs)

        _show.__doc__ = "Show every open figure as a rich output of the cell, then close them (alphora sandbox)."
        self.show = _show

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "matplotlib.pyplot":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        loader = getattr(spec, "loader", None)
        run = getattr(loader, "exec_module", None)
        if spec is None or run is None:
            return spec
        show = self.show

        def exec_module(module: Any) -> None:
            run(module)
            module.show = show

        loader.exec_module = exec_module  # type: ignore[union-attr]
        return spec

    def patch_loaded(self) -> None:
        """pyplot imported before the hook was installed (e.g. preloaded): patch it now."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None and getattr(plt, "show", None) is not self.show:
            plt.show = self.show  # type: ignore[attr-defined]
