"""Checkpoints: a sandbox's workspace, its own Python environment and its sessions' variables, saved
to a storage and resumed on any host and backend (``Sandbox.checkpoint`` / ``Sandbox.resume``).

Layout in the storage (see docs/checkpoints.md)::

    checkpoints/blobs/<sha256>             content-addressed: file contents, the environment, pickles
    checkpoints/<name>/manifest.json       {"body": {...}, "sha256": <sha256 of the canonical body>}

A blob already in the storage is never sent again (incremental: a one-file change uploads one file
and the manifest). The manifest is written last, so an interrupted checkpoint leaves the previous
one (or none) in place. Resuming checks the manifest's checksum, that every blob it names is there
and that every blob's checksum matches, before it creates or writes anything: a corrupted or partial
checkpoint is refused with a :class:`CheckpointError` that names the first problem.

The workspace listing and the rule for which stored paths a workspace may hold are those of
:mod:`.storage.persist`; files go through the Sandbox file API (path guard, no symlinks followed).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs

from .errors import FileSystemError, StorageError, StorageNotFoundError
from .pathguard import normalize
from .runner import RUNNER_PACKAGE
from .storage.base import Storage, validate_key
from .storage.persist import workspace_files

if TYPE_CHECKING:
    from .sandbox import Sandbox, _CheckedSession

__all__ = ["CheckpointError", "CheckpointResult", "ResumeReport", "checkpoint", "load_manifest", "resume"]

FORMAT = 1
ROOT = "checkpoints"
BLOBS = f"{ROOT}/blobs/"
#: scratch folder in the workspace while a checkpoint is taken or resumed (never saved)
SCRATCH = ".alphora-checkpoint"
#: a larger manifest is refused unread (about 140 bytes a file: 64 MiB is some 450,000 files)
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class CheckpointError(StorageError):
    """The checkpoint cannot be taken or resumed: missing, partial, corrupted, or of another format."""


@attrs.frozen
class CheckpointResult:
    """What :meth:`Sandbox.checkpoint` stored."""

    name: str
    files: int  #: workspace files in the checkpoint
    uploaded_files: int  #: of those, files whose content was not in the storage yet (sent now)
    uploaded_bytes: int  #: bytes sent: new blobs (files, environment, session state) and the manifest
    packages: tuple[str, ...]  #: the environment's distributions, ``name==version``
    sessions: Mapping[str, tuple[str, ...]]  #: per session, the names saved (variables and modules)
    unpicklable: Mapping[str, Mapping[str, str]]  #: per session, names NOT saved and why


@attrs.frozen
class ResumeReport:
    """What :meth:`Sandbox.resume` restored (``sandbox.resume_report``)."""

    name: str
    files: int
    environment: str  #: ``copied``, ``reinstalled``, ``empty`` or ``not restored: <why>``
    packages: tuple[str, ...]
    sessions: Mapping[str, tuple[str, ...]]  #: per session, the names restored
    not_restored: Mapping[str, Mapping[str, str]]  #: per session, names that could not be restored and why


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or "/" in name or name in ("", ".", "..", "blobs"):
        raise CheckpointError(f"invalid checkpoint name {name!r}: one storage key segment, not 'blobs'", key=str(name))
    return validate_key(name)


def _manifest_key(name: str) -> str:
    return f"{ROOT}/{_check_name(name)}/manifest.json"


# -- code run inside the sandbox ---------------------------------------------------------------------

#: the sandbox's own environment (its venv, else its user site), packed into a tar that is byte for byte
#: the same when the packages are (so an unchanged environment is not uploaded again); prints a JSON summary
_PACK_ENV = """\
import gzip, importlib.metadata as m, json, os, site, sys, sysconfig, tarfile
own = []
if sys.prefix != sys.base_prefix:
    own += [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
elif site.ENABLE_USER_SITE:
    own.append(site.getusersitepackages())
own = sorted({os.path.realpath(p) for p in own if os.path.isdir(p)})
reqs = sorted({f"{d.metadata['Name']}=={d.version}" for d in m.distributions(path=own) if d.metadata["Name"]})
entries = [(d, e) for d in own for e in sorted(os.listdir(d))]
def same_bytes_for_same_files(info):  # no bytecode caches, no owners: unchanged packages, same blob
    if "__pycache__" in info.name.split("/"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
if entries and OUT_TAR:
    with gzip.GzipFile(OUT_TAR, "wb", mtime=0) as z, tarfile.open(fileobj=z, mode="w") as t:
        for d, e in entries:
            t.add(os.path.join(d, e), arcname=e, filter=same_bytes_for_same_files)
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "tag": sys.implementation.cache_tag,
                  "platform": sysconfig.get_platform(), "requirements": reqs, "packed": bool(entries and OUT_TAR),
                  "cwd": os.getcwd()}))
"""

#: unpack a packed environment into this sandbox's own environment
_UNPACK_ENV = """\
import os, site, sys, sysconfig, tarfile
dest = sysconfig.get_path("purelib") if sys.prefix != sys.base_prefix else site.getusersitepackages()
os.makedirs(dest, exist_ok=True)
with tarfile.open(IN_TAR) as t:
    if hasattr(tarfile, "data_filter"):
        t.extractall(dest, filter="data")
    else:
        t.extractall(dest)
"""

#: run in a session: pickle each global (stdlib pickle) into PICKLE_PATH; print what was saved and what not
_SAVE_SESSION = """\
def _alphora_checkpoint_save(path):
    import json, pickle, types
    saved, modules, bad = {}, {}, {}
    for k, v in list(globals().items()):
        if k.startswith("__") or k in ("_", "_alphora_checkpoint_save"):
            continue
        if isinstance(v, types.ModuleType):
            modules[k] = v.__name__
            continue
        if str(getattr(v, "__module__", "")).startswith(RUNNER_PACKAGE + "."):
            continue  # what the session itself provides (display): every session has its own
        if isinstance(v, (type, types.FunctionType)) and getattr(v, "__module__", None) == "__main__":
            bad[k] = "defined in a session cell: pickle would store only its name; define it again after resuming"
            continue
        try:
            saved[k] = pickle.dumps(v, protocol=4)
        except Exception as exc:
            bad[k] = "%s: %s" % (type(exc).__name__, exc)
    with open(path, "wb") as f:
        pickle.dump(saved, f, protocol=4)
    print(json.dumps({"saved": sorted(saved), "modules": modules, "unpicklable": bad}))
try:
    _alphora_checkpoint_save(PICKLE_PATH)
finally:
    del _alphora_checkpoint_save
"""

#: run in a session: import the modules and unpickle the globals from PICKLE_PATH; print what failed
_LOAD_SESSION = """\
def _alphora_checkpoint_load(path, modules):
    import importlib, json, pickle
    with open(path, "rb") as f:
        saved = pickle.load(f)
    done, bad = [], {}
    for k, mod in modules.items():
        try:
            globals()[k] = importlib.import_module(mod)
            done.append(k)
        except Exception as exc:
            bad[k] = "%s: %s" % (type(exc).__name__, exc)
    for k, data in saved.items():
        try:
            globals()[k] = pickle.loads(data)
            done.append(k)
        except Exception as exc:
            bad[k] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps({"restored": sorted(done), "not_restored": bad}))
try:
    _alphora_checkpoint_load(PICKLE_PATH, MODULE_NAMES)
finally:
    del _alphora_checkpoint_load
"""


def _with(code: str, **values: Any) -> str:
    """``code`` with its upper-case placeholders replaced by literals (repr: no injection, and no
    name left behind in a session's namespace)."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, values)) + r")\b")  # one pass: a value is never rescanned
    return pattern.sub(lambda m: repr(values[m.group(1)]), code)


def _last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("no JSON line in the output")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


async def _sandbox_python(sandbox: Sandbox, code: str, what: str) -> dict[str, Any]:
    r = await sandbox._python_internal(code)
    if not r.success:
        raise CheckpointError(f"{what} failed in the sandbox: {r.error or r.stderr[-2000:]}")
    return _last_json(r.stdout)


async def _session_python(session: _CheckedSession, code: str, what: str) -> dict[str, Any]:
    r = await session._run_internal(code)
    if not r.success:
        raise CheckpointError(f"{what} failed in session {session.name!r}: {r.error or r.stderr[-2000:]}")
    return _last_json(r.stdout)


# -- checkpoint ---------------------------------------------------------------------------------------


async def checkpoint(sandbox: Sandbox, storage: Storage, name: str, *, exclude: Sequence[str] = ()) -> CheckpointResult:
    """Save the workspace, the sandbox's own environment and its open sessions' picklable globals."""
    key = _manifest_key(name)
    have = set(await storage.list(BLOBS))
    sent = 0
    uploaded = 0

    async def put_blob(data: bytes) -> str:
        nonlocal sent
        digest = _sha(data)
        if BLOBS + digest not in have:
            await storage.put(BLOBS + digest, data)
            have.add(BLOBS + digest)
            sent += len(data)
        return digest

    tmp = f"{SCRATCH}/{secrets.token_hex(6)}"
    await sandbox.make_dir(tmp)
    try:
        # the environment first: its probe also tells where the workspace is, as the sandbox sees it
        info = await _sandbox_python(sandbox, _with(_PACK_ENV, OUT_TAR=f"{tmp}/env.tar.gz"), "packing the environment")
        ws = info.pop("cwd")
        env: dict[str, Any] = {k: info[k] for k in ("python", "tag", "platform", "requirements")}
        env_tar = f"{tmp}/env.tar.gz"
        env["blob"] = (
            await put_blob(await _read_capped(sandbox, env_tar, "the environment")) if info["packed"] else None
        )
        sessions: dict[str, Any] = {}
        for sname, session in dict(sandbox._sessions).items():
            path = f"{tmp}/session-{len(sessions)}.pkl"
            code = _with(_SAVE_SESSION, PICKLE_PATH=f"{ws}/{path}", RUNNER_PACKAGE=RUNNER_PACKAGE)
            got = await _session_python(session, code, "saving the variables")
            sessions[sname] = {
                "blob": await put_blob(await _read_capped(sandbox, path, f"the variables of session {sname!r}")),
                "saved": got["saved"],
                "modules": got["modules"],
                "unpicklable": got["unpicklable"],
            }
    finally:
        await _drop_scratch(sandbox)
    files: dict[str, Any] = {}
    for info_ in await workspace_files(sandbox, [*exclude, SCRATCH]):
        data = await _read_capped(sandbox, info_.path, f"file {info_.path!r}", info_.size)
        before = sent
        files[info_.path] = {"sha256": await put_blob(data), "size": len(data)}
        uploaded += sent != before
    body = {
        "format": FORMAT,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(),
        "backend": sandbox.backend_type,
        "files": files,
        "environment": env,
        "sessions": sessions,
    }
    raw = json.dumps({"body": body, "sha256": _sha(_canonical(body))}, indent=1).encode()
    await storage.put(key, raw, content_type="application/json")  # last: the checkpoint now exists
    sandbox._audit("checkpoint", name=name, files=len(files), uploaded_bytes=sent + len(raw))
    return CheckpointResult(
        name=name,
        files=len(files),
        uploaded_files=uploaded,
        uploaded_bytes=sent + len(raw),
        packages=tuple(env["requirements"]),
        sessions={k: tuple(sorted([*v["saved"], *v["modules"]])) for k, v in sessions.items()},
        unpicklable={k: dict(v["unpicklable"]) for k, v in sessions.items()},
    )


async def _read_capped(sandbox: Sandbox, path: str, what: str, size: int | None = None) -> bytes:
    """A file of the sandbox, refused when over its ``max_file_size_mb`` (resume would refuse to write
    it anyway): sandbox code can make a sparse file of any size in an instant. Streamed, and the
    stream is stopped at the limit, so a file that grows after its size was checked is caught too."""
    limit = sandbox.security_policy.max_file_size_bytes

    def too_big(n: int, more: str = "") -> CheckpointError:
        return CheckpointError(
            f"{what} is {n:,} bytes{more}, over the sandbox's max_file_size_mb="
            f"{sandbox.security_policy.max_file_size_mb:g}: leave it out with exclude=[...] or raise the limit"
        )

    if size is None:
        size = (await sandbox.get_file_info(path)).size
    if size > limit:
        raise too_big(size)
    data = bytearray()
    stream = sandbox.read_file_stream(path)
    try:
        async for chunk in stream:
            data += chunk
            if len(data) > limit:
                raise too_big(len(data), " or more (it grew while the checkpoint was taken)")
    finally:
        close = getattr(stream, "aclose", None)  # stop the transfer at once when leaving early
        if close is not None:
            await close()
    return bytes(data)


async def _drop_scratch(sandbox: Sandbox) -> None:
    if await sandbox.file_exists(SCRATCH):
        await sandbox.delete_file(SCRATCH)


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# -- resume -------------------------------------------------------------------------------------------


async def load_manifest(storage: Storage, name: str) -> dict[str, Any]:
    """The manifest's body, checked: CheckpointError if it is missing, unreadable or altered."""
    key = _manifest_key(name)
    try:
        size = (await storage.stat(key)).size
        if size > MAX_MANIFEST_BYTES:
            raise CheckpointError(
                f"checkpoint {name!r} is corrupted: its manifest {key} is {size:,} bytes "
                f"(more than {MAX_MANIFEST_BYTES:,}); it was not read",
                key=key,
            )
        raw = await storage.get(key)
    except StorageNotFoundError:
        raise CheckpointError(f"no checkpoint named {name!r} in {storage!r} (no {key})", key=key) from None
    try:
        doc = json.loads(raw)
        body, digest = doc["body"], doc["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {name!r} is corrupted: its manifest {key} is not valid ({exc})", key=key
        ) from None
    if _sha(_canonical(body)) != digest:
        raise CheckpointError(f"checkpoint {name!r} is corrupted: its manifest {key} fails its checksum", key=key)
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else None
        raise CheckpointError(f"checkpoint {name!r} has format {found!r}; this version reads format {FORMAT}", key=key)
    problem = _body_problem(body)
    if problem is not None:  # the checksum is the manifest's own: whoever can write the storage can forge it
        raise CheckpointError(f"checkpoint {name!r} is corrupted: its manifest {key} {problem}", key=key)
    return dict(body)


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _body_problem(body: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of a manifest's body (None: nothing), checked before any of it is
    used: a manifest comes from storage and is as trustworthy as whoever can write there."""
    files, env, sessions = body.get("files"), body.get("environment"), body.get("sessions")
    if not isinstance(files, dict):
        return "has no 'files' table"
    for path, f in files.items():
        if not isinstance(f, dict) or not _is_digest(f.get("sha256")) or not isinstance(f.get("size"), int):
            return f"has a bad entry for file {path!r} (wants a sha256 hex digest and a size)"
        try:
            rel = normalize(path)
        except FileSystemError as exc:
            return f"names {path!r}, not a workspace path: {exc.message}"
        if rel != path or not rel or rel.split("/")[0] == SCRATCH:
            return f"names {path!r}, not a workspace file's normal path"
        parents = [path[:i] for i, c in enumerate(path) if c == "/"]
        if any(p in files for p in parents):
            return f"names {path!r} and a file that would have to be its folder"
    if not isinstance(env, dict) or not all(isinstance(env.get(k), str) for k in ("python", "tag", "platform")):
        return "has no valid 'environment' (python, tag and platform)"
    reqs = env.get("requirements")
    if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
        return "has no valid list of requirements"
    if env.get("blob") is not None and not _is_digest(env["blob"]):
        return "names the environment's blob with something that is not a sha256 hex digest"
    if not isinstance(sessions, dict):
        return "has no 'sessions' table"
    for sname, sess in sessions.items():
        if not (isinstance(sess, dict) and _is_digest(sess.get("blob")) and _is_str_map(sess.get("modules"))):
            return f"has a bad entry for session {sname!r} (wants a blob digest and a table of modules)"
        if not _is_str_map(sess.get("unpicklable")) or not isinstance(sess.get("saved"), list):
            return f"has a bad entry for session {sname!r} (wants 'saved' and 'unpicklable')"
    return None


async def _fetch(storage: Storage, name: str, body: Mapping[str, Any], limit: int) -> dict[str, bytes]:
    """Every blob the manifest names, checked, before anything is written anywhere. A blob larger
    than ``limit`` (the new sandbox's ``max_file_size_mb``: it could not be written anyway) is refused
    by its size in the storage, before it is downloaded."""
    wanted: dict[str, str] = {}  # digest -> what it holds
    for path, f in body["files"].items():
        wanted.setdefault(f["sha256"], f"file {path!r}")
    if body["environment"].get("blob"):
        wanted.setdefault(body["environment"]["blob"], "the environment")
    for sname, s in body["sessions"].items():
        wanted.setdefault(s["blob"], f"the variables of session {sname!r}")
    present = set(await storage.list(BLOBS))
    missing = [what for digest, what in wanted.items() if BLOBS + digest not in present]
    if missing:
        raise CheckpointError(
            f"checkpoint {name!r} is partial: {len(missing)} of its {len(wanted)} blobs are missing "
            f"(first: {missing[0]}); nothing was restored"
        )
    for digest, what in wanted.items():
        size = (await storage.stat(BLOBS + digest)).size
        if size > limit:
            raise CheckpointError(
                f"checkpoint {name!r} cannot be restored: the blob of {what} is {size:,} bytes, over the new "
                f"sandbox's max_file_size_mb ({limit:,} bytes); nothing was downloaded or restored",
                key=BLOBS + digest,
            )
    blobs: dict[str, bytes] = {}
    for digest, what in wanted.items():
        data = await storage.get(BLOBS + digest)
        if _sha(data) != digest:
            raise CheckpointError(
                f"checkpoint {name!r} is corrupted: the blob of {what} ({BLOBS + digest}) fails its checksum; "
                "nothing was restored",
                key=BLOBS + digest,
            )
        blobs[digest] = data
    return blobs


async def resume(sandbox: Sandbox, storage: Storage, name: str) -> ResumeReport:
    """Restore checkpoint ``name`` into ``sandbox`` (created, not started); start it; report."""
    body = await load_manifest(storage, name)
    blobs = await _fetch(storage, name, body, sandbox.security_policy.max_file_size_bytes)
    await sandbox.start()
    for path, f in body["files"].items():
        await sandbox.write_file_bytes(path, blobs[f["sha256"]])
    env = body["environment"]
    tmp = f"{SCRATCH}/{secrets.token_hex(6)}"
    await sandbox.make_dir(tmp)
    restored: dict[str, tuple[str, ...]] = {}
    failed: dict[str, dict[str, str]] = {}
    try:
        here = await _sandbox_python(sandbox, _with(_PACK_ENV, OUT_TAR=""), "probing the environment")
        same = all(here[k] == env[k] for k in ("python", "tag", "platform"))
        if not env.get("blob"):
            outcome = "empty"
        elif same:
            await sandbox.write_file_bytes(f"{tmp}/env.tar.gz", blobs[env["blob"]])
            r = await sandbox._python_internal(_with(_UNPACK_ENV, IN_TAR=f"{tmp}/env.tar.gz"))
            outcome = "copied" if r.success else f"not restored: unpacking failed: {r.error or r.stderr[-500:]}"
        else:
            why = (
                f"saved on Python {env['python']} ({env['platform']}), this sandbox has "
                f"{here['python']} ({here['platform']})"
            )
            pip = await sandbox.install_packages(env["requirements"]) if env["requirements"] else None
            if pip is not None and pip.success:
                outcome = f"reinstalled ({why})"
            else:
                detail = (pip.stderr or pip.error)[-500:] if pip is not None else "no requirements recorded"
                outcome = f"not restored: {why}, and re-installing failed: {detail}"
        for sname, s in body["sessions"].items():
            path = f"{tmp}/session-{secrets.token_hex(4)}.pkl"
            await sandbox.write_file_bytes(path, blobs[s["blob"]])
            session = await sandbox._open_session(sname)
            got = await _session_python(
                session,
                _with(_LOAD_SESSION, PICKLE_PATH=f"{here['cwd']}/{path}", MODULE_NAMES=s["modules"]),
                "restoring",
            )
            restored[sname] = tuple(got["restored"])
            failed[sname] = {**s["unpicklable"], **got["not_restored"]}
    finally:
        await _drop_scratch(sandbox)
    sandbox._audit("resume", name=name, files=len(body["files"]), environment=outcome)
    return ResumeReport(
        name=name,
        files=len(body["files"]),
        environment=outcome,
        packages=tuple(env["requirements"]),
        sessions=restored,
        not_restored=failed,
    )
