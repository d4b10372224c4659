"""``alphora-sandbox docker …``: build the images locally, list them, reap orphaned containers.

The core CLI mounts these under ``alphora-sandbox docker`` with :func:`add_commands`; the same
commands run standalone as ``alphora-sandbox-docker …`` or ``python -m alphora.sandbox_docker …``.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alphora.sandbox.errors import SandboxError

from .images import Reporter

__all__ = ["add_commands", "main"]


class _RichReporter(Reporter):
    """Shows build phases with a spinner, build output dimmed, uploads as a progress bar."""

    def __init__(self, verbose: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.verbose = verbose
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task: Any = None
        self._last = ""

    def __enter__(self) -> _RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, text: str) -> None:
        self._finish_task()
        self._task = self.progress.add_task(text, total=None)

    def log(self, line: str) -> None:
        from rich.markup import escape

        self._last = line
        if self._task is not None:
            desc = self.progress.tasks[-1].description.split("  ·  ")[0]
            self.progress.update(self._task, description=f"{desc}  ·  [dim]{escape(line[:70])}[/dim]")
        if self.verbose:
            self.console.print(line, style="dim", highlight=False, markup=False)

    def done(self, text: str) -> None:
        self._finish_task()
        self.console.print(f"[green]✓[/green] {text}")

    def note(self, text: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]![/yellow] {escape(text)}")

    def upload(self, total: int) -> Callable[[int], None]:
        task = self._task if self._task is not None else self.progress.add_task("uploading", total=None)
        self.progress.update(task, total=total, completed=0)

        def advance(n: int) -> None:
            self.progress.advance(task, n)

        return advance

    def _finish_task(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None


def _host_ca_bundle() -> Path | None:
    for cand in (
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def _cmd_build(args: argparse.Namespace) -> int:
    from .images import BuildOptions, build_images

    certs = [Path(p) for p in args.ca_cert]
    if args.drop_ca_certs and (certs or args.host_ca):
        print(
            "error: --drop-ca-certs builds without extra CA certificates; do not also give --ca-cert/--host-ca",
            file=sys.stderr,
        )
        return 2
    if args.host_ca:
        bundle = _host_ca_bundle()
        if bundle is None:
            print("error: --host-ca: no CA bundle found on this host", file=sys.stderr)
            return 2
        certs.append(bundle)
    opts = BuildOptions(
        source=args.source,
        ca_certs=certs,
        force=args.force,
        mirror=args.mirror,
        pip_index_url=args.pip_index_url,
        pip_extra_args=tuple(args.pip_arg),
        build_network=args.network,
        keep_ca_certs=not args.drop_ca_certs,
    )
    with _RichReporter(verbose=args.verbose) as rep:
        reports = build_images(args.images or ["base"], options=opts, reporter=rep)
    for r in reports:
        state = "reused" if r.reused else f"built from {r.source} in {r.seconds:.0f} s"
        print(f"{r.tag:32} {r.image_id[7:19]}  {state}  tags: {', '.join(r.tags)}")
    return 0


def _cmd_images(args: argparse.Namespace) -> int:
    from ._client import make_client
    from .images import image_status

    rows = image_status(make_client())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "present" if row["present"] else "missing"
        origin = "" if not row["present"] else ("alphora" if row["ours"] else "foreign")
        print(f"{row['recipe']:12} {row['tag']:32} {mark:8} {origin:8} {row['id']:20} {row['size_mb']:>8} MB")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    from .reaper import prune_orphans

    report = prune_orphans(all_hosts=args.all, dry_run=args.dry_run, include_alive=args.include_alive)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report.containers)} container(s), {len(report.volumes)} volume(s)")
    for name in (*report.containers, *report.volumes):
        print(f"  {name}")
    return 0


def add_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``docker {build,images,prune}`` to an argparse subparsers object."""
    docker_p: argparse.ArgumentParser = subparsers.add_parser(
        "docker", help="Docker backend: build images locally, list them, reap orphans"
    )
    _fill(docker_p)
    return docker_p


def _fill(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="docker_command", required=True)

    b = sub.add_parser(
        "build", aliases=["build-images"], help="build the sandbox images on the engine (no registry needed)"
    )
    b.add_argument("images", nargs="*", help="base (default), minimal, datascience, ml, or all")
    b.add_argument(
        "--ca-cert",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA certificate(s) (a bundle is fine) trusted inside the images; repeatable",
    )
    b.add_argument("--host-ca", action="store_true", help="trust this host's CA bundle inside the images")
    b.add_argument(
        "--drop-ca-certs",
        action="store_true",
        help="build without extra CA certificates (without this, a build that names none keeps those "
        "the existing base image has)",
    )
    b.add_argument(
        "--source",
        choices=["auto", "debian", "registry"],
        default="auto",
        help="auto: FROM the upstream python:3.11-slim when the engine has it or a registry gives it, "
        "else Debian packages (mmdebstrap)",
    )
    b.add_argument("--force", action="store_true", help="rebuild even when an up-to-date image exists")
    b.add_argument("--mirror", help="Debian mirror URL or apt sources file for mmdebstrap (default: the host's)")
    b.add_argument("--pip-index-url", help="package index for the pip steps (e.g. a CPU-only torch index for ml)")
    b.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip install; repeatable")
    b.add_argument("--network", help="network mode of build steps (default: the engine's bridge)")
    b.add_argument("-v", "--verbose", action="store_true", help="print the full build output")
    b.set_defaults(docker_func=_cmd_build)

    i = sub.add_parser("images", help="show which sandbox images exist on the engine")
    i.add_argument("--json", action="store_true")
    i.set_defaults(docker_func=_cmd_images)

    p = sub.add_parser("prune", help="remove containers and volumes left behind by crashed host processes")
    p.add_argument("--all", action="store_true", help="any host's sandboxes, not only this host's")
    p.add_argument(
        "--include-alive",
        action="store_true",
        help="also those whose owning process still runs (careful: they are in use)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(docker_func=_cmd_prune)


def run(args: argparse.Namespace) -> int:
    """Dispatch parsed ``docker …`` arguments (for the core CLI)."""
    func: Callable[[argparse.Namespace], int] = args.docker_func
    try:
        return func(args)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="alphora-sandbox docker",
        description="Docker backend: build the sandbox images locally (no registry needed), list them, "
        "and remove containers and volumes that crashed processes left behind.",
    )
    _fill(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
