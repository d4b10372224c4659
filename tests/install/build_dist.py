"""Build the release artifacts: an sdist and a wheel of each distribution under packages/.

    python tests/install/build_dist.py [OUTDIR]      # OUTDIR defaults to dist/ in the repository root

This is the one build recipe: ``nox -s build`` runs this file, and tests/install/test_wheels.py runs
it to build the wheels it installs into fresh virtual environments. It uses ``python -m build`` (the
PyPA frontend; hatchling is the backend), which builds the sdist first and the wheel from that sdist,
so a file missing from an sdist breaks the build here rather than on a user's machine. Artifacts of
earlier builds in OUTDIR are removed first: pip picks the highest version it finds there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs() -> list[Path]:
    """Every distribution in the repository (a directory under packages/ with a pyproject.toml)."""
    return sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))


def build_dist(outdir: Path, *, python: str = sys.executable, quiet: bool = False) -> list[Path]:
    """Build every distribution into ``outdir``; returns the artifacts (sorted)."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("alphora_sandbox*"):
        if old.is_file() and old.name.endswith((".whl", ".tar.gz")):
            old.unlink()
    for pkg in package_dirs():
        cmd = [python, "-m", "build", "--outdir", str(outdir), str(pkg)]
        proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
        if proc.returncode != 0:
            detail = f"\n{proc.stdout}\n{proc.stderr}" if quiet else ""
            raise RuntimeError(f"building {pkg.name} failed (exit {proc.returncode}): {' '.join(cmd)}{detail}")
    return sorted(p for p in outdir.iterdir() if p.name.startswith("alphora_sandbox"))


def main(argv: list[str]) -> int:
    outdir = Path(argv[0]) if argv else ROOT / "dist"
    for artifact in build_dist(outdir.resolve()):
        print(artifact)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
