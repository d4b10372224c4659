"""The lexical path guard: examples and hypothesis-generated hostile paths."""

from __future__ import annotations

import os
import posixpath
from pathlib import PurePosixPath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alphora.sandbox.errors import PathTraversalError, SecurityViolationError
from alphora.sandbox.pathguard import blocked_by, check_blocked, is_within, normalize

WS = "/srv/sandboxes/abc/workspace"
ALIASES = (WS, "/workspace")


@pytest.mark.parametrize(
    ("given_path", "expected"),
    [
        ("", ""),
        (".", ""),
        ("./", ""),
        ("a.txt", "a.txt"),
        ("./a.txt", "a.txt"),
        ("dir/sub/", "dir/sub"),
        ("dir/./sub/file", "dir/sub/file"),
        ("dir/../file", "file"),
        ("a/b/../../c", "c"),
        ("/workspace", ""),
        ("/workspace/", ""),
        ("/workspace/out/x.csv", "out/x.csv"),
        (WS + "/data.json", "data.json"),
        ("a/~b", "a/~b"),
        ("...", "..."),
        ("..foo/bar", "..foo/bar"),
        (PurePosixPath("p/q"), "p/q"),
    ],
)
def test_normalize_accepts(given_path: str, expected: str) -> None:
    assert normalize(given_path, workspace_aliases=ALIASES) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        "..",
        "../x",
        "a/../../x",
        "./../x",
        "/etc/passwd",
        "/",
        "//etc/passwd",
        "/workspace/../etc/passwd",
        "/workspacex/file",
        WS + "/../other/file",
        WS + "x/file",
        "a\x00b",
        "ok.txt\x00../../etc/passwd",
        "..\\..\\etc\\passwd",
        "a\\b",
        "a//b",
        "~",
        "~/.ssh/id_rsa",
        "~root/.bashrc",
        "C:/Windows",
        "c:x",
        "dir//",
    ],
)
def test_normalize_rejects_and_names_the_path(hostile: str) -> None:
    with pytest.raises(PathTraversalError) as info:
        normalize(hostile, workspace_aliases=ALIASES)
    assert info.value.path == hostile
    assert repr(hostile) in str(info.value)
    # it is also a builtin PermissionError, so generic handlers work
    assert isinstance(info.value, PermissionError)


def test_alias_of_root_is_never_honoured() -> None:
    with pytest.raises(PathTraversalError):
        normalize("/etc/passwd", workspace_aliases=("/",))


def test_non_path_types_are_refused() -> None:
    with pytest.raises(PathTraversalError):
        normalize(42)  # type: ignore[arg-type]


# -- property tests ---------------------------------------------------------------------------

_component = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "~",
            "~root",
            "etc",
            "passwd",
            "a",
            "b",
            "workspace",
            "C:",
            "\x00",
            "\\",
            "..\\..",
            ". .",
            "...",
            " ..",
            ".. ",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), max_size=6),
)
hostile_paths = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["", "/", "//", "./", "../", "/workspace/", WS + "/", "/workspace/../", "~/"]),
    st.lists(_component, max_size=8),
    st.sampled_from(["", "/", "/.", "/.."]),
)


def _escapes(rel: str) -> bool:
    """Resolve ``rel`` against a root the way the kernel would (lexically) and see if it leaves."""
    root = "/ROOT"
    joined = posixpath.normpath(posixpath.join(root, rel))
    return not (joined == root or joined.startswith(root + "/"))


@settings(max_examples=3000, deadline=None)
@given(hostile_paths)
@example("../../../../etc/passwd")
@example("/workspace/../../etc")
@example("a/" * 50 + "../" * 51)
def test_normalize_never_returns_an_escaping_path(path: str) -> None:
    try:
        rel = normalize(path, workspace_aliases=ALIASES)
    except PathTraversalError as exc:
        error: PathTraversalError | None = exc
    else:
        error = None
    if error is not None:
        assert error.path == path
        return
    assert is_within(rel), rel
    assert not _escapes(rel), rel
    assert "\x00" not in rel
    assert "\\" not in rel
    assert not rel.startswith(("/", "~"))
    # normalising again is a fixpoint: the result is already canonical
    assert normalize(rel) == rel


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcxyz._-", min_size=1, max_size=5).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=6,
    )
)
def test_plain_relative_paths_pass_unchanged(parts: list[str]) -> None:
    path = "/".join(parts)
    assert normalize(path) == path
    assert normalize("/workspace/" + path, workspace_aliases=ALIASES) == path
    assert normalize(os.path.join(WS, path), workspace_aliases=ALIASES) == path


def test_blocked_by_absolute_and_relative_patterns() -> None:
    pats = ("/etc", "secrets", "*.key")
    assert blocked_by("/etc/passwd", pats) == "/etc"
    assert blocked_by("/etcetera", pats) is None
    assert blocked_by("secrets/db.txt", pats, rel="secrets/db.txt") == "secrets"
    assert blocked_by("secretsx", pats, rel="secretsx") is None
    assert blocked_by("keys/id.key", pats, rel="keys/id.key") == "*.key"
    assert blocked_by("data.csv", pats, rel="data.csv") is None
    with pytest.raises(SecurityViolationError, match="blocked"):
        check_blocked("/etc/shadow", pats)
