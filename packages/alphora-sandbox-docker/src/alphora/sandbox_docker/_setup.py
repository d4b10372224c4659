"""The container's first program: make the volumes the sandbox user's, then drop root for good.

Any image with a ``python3`` works, including ones that know nothing of this project (no
``sandbox`` user, no ``/workspace``): the engine mounts the sandbox's fresh named volumes owned by
root, so the container starts as root with only the capabilities this step needs
(:data:`SETUP_CAPS`), and :func:`setup_program` — a stdlib-only program run as
``python3 -I -S -c …`` — does, before anything else happens in the container:

1. checks the interpreter is at least :data:`MIN_PYTHON` (the runner's floor) and resolves the sandbox user
   (``uid[:gid]`` or names from the image's ``/etc/passwd`` / ``/etc/group``);
2. gives each volume to that user, if its root is not theirs yet (a fresh volume; what the image
   had at that path comes along, so the walk is recursive, never following a symlink);
3. empties the capability bounding set, sets no-new-privileges (the engine has set it already),
   and switches groups, gid and uid (real, effective, saved) to the sandbox user; the kernel then
   clears the permitted and effective sets, and the inheritable set is cleared as well;
4. checks the result in ``/proc/self/status`` — no capability left in the effective, permitted or
   ambient set, every uid and gid the sandbox user's, no-new-privileges on, root out of reach — and
   refuses to go on otherwise;
5. ``exec``s the runner's bootstrap (``python3 -u -S -c BOOT``) as that user: a fresh interpreter
   with the ordinary ``site`` set-up (the user's ``~/.local`` packages), which only then reads
   the runner from stdin. Nothing from the sandbox reaches the privileged step: ``-I -S`` keeps
   the working directory, ``PYTHON*`` variables and ``.pth`` files (all writable by sandbox code
   on a restarted container) out of it.

A failure is one line on stderr that starts with :data:`SETUP_ERROR` and exit status
:data:`SETUP_EXIT`; the backend turns it into a ``DockerError`` naming the image.

The program is written for any Python 3 (no f-strings) so that an image whose python3 is too old
still gets the version message rather than a syntax error.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MIN_PYTHON", "SETUP_CAPS", "SETUP_ERROR", "SETUP_EXIT", "is_root_user", "setup_argv", "setup_program"]

#: the oldest python3 the runner works on (proctree.exit_code stands in for 3.9's
#: os.waitstatus_to_exitcode). Run on images with CPython 3.8, 3.9, 3.10, 3.11, 3.12 and 3.13.
MIN_PYTHON = (3, 8)

#: capabilities the container starts with; all of them are gone before the runner starts
#: CHOWN: give the volumes to the user; DAC_READ_SEARCH: walk image content copied into a fresh
#: volume whatever its modes; SETGID / SETUID: become the user; SETPCAP: empty the bounding set
SETUP_CAPS = ("CHOWN", "DAC_READ_SEARCH", "SETGID", "SETUID", "SETPCAP")
SETUP_ERROR = "alphora-sandbox setup:"
SETUP_EXIT = 71

_BODY = r"""
import os, sys


def _fail(msg):
    try:
        sys.stderr.write(_ERR + " " + msg + "\n")
        sys.stderr.flush()
    finally:
        os._exit(_EXIT)


if sys.version_info < _MIN:
    _fail("python3 is %d.%d; the sandbox runner needs Python %d.%d or newer" % (sys.version_info[:2] + _MIN))

import errno
try:
    import grp
    import pwd
except ImportError:
    grp = pwd = None
try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    ctypes = _libc = None


def _resolve(spec):
    name, _, group = spec.partition(":")
    pw = None
    if pwd is not None:
        try:
            pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            pw = None
    if name.isdigit():
        uid = int(name)
    elif pw is not None:
        uid = pw.pw_uid
    else:
        _fail("user %r is not in the image's /etc/passwd; give a numeric uid:gid" % name)
    if group.isdigit():
        gid = int(group)
    elif group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except (KeyError, AttributeError):
            _fail("group %r is not in the image's /etc/group; give a numeric gid" % group)
    else:
        gid = pw.pw_gid if pw is not None else uid
    groups = [gid]
    if pw is not None:
        try:
            groups = sorted(set(os.getgrouplist(pw.pw_name, gid)))
        except OSError:
            pass
    return uid, gid, groups


def _give(top, uid, gid):
    st = os.lstat(top)
    if st.st_uid == uid and st.st_gid == gid:
        return

    def _raise(exc):
        raise exc

    for path, dirs, files in os.walk(top, onerror=_raise):
        for name in dirs + files:
            os.lchown(os.path.join(path, name), uid, gid)
    os.lchown(top, uid, gid)


def _status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _no_new_privs(st):
    if "NoNewPrivs" in st:
        return st["NoNewPrivs"] == "1"
    # gVisor (runsc) shows no NoNewPrivs line in /proc/self/status: ask the kernel itself
    if _libc is None:
        return False
    return _libc.prctl(ctypes.c_ulong(39), *[ctypes.c_ulong(0)] * 4) == 1  # PR_GET_NO_NEW_PRIVS


def _prctl(*args):
    if _libc is None:
        return errno.ENOSYS
    args = args + (0,) * (5 - len(args))
    return 0 if _libc.prctl(*[ctypes.c_ulong(a) for a in args]) == 0 else ctypes.get_errno()


def _clear_inheritable():
    if _libc is None:
        return

    class _Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class _Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = _Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    _libc.capset(ctypes.byref(header), (_Data * 2)())


def _setup():
    uid, gid, groups = _resolve(_USER)
    if uid == 0:
        _fail("user %r is root; the sandbox user must not be (give user='0:0' to run as root on purpose)" % _USER)
    for top in _DIRS:
        try:
            _give(top, uid, gid)
        except OSError as exc:
            _fail("cannot give %s to uid %d: %s" % (top, uid, exc))
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        _prctl(24, cap)  # PR_CAPBSET_DROP (EINVAL past the kernel's last capability)
    _prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        _fail("cannot switch to uid %d gid %d: %s" % (uid, gid, exc))
    _clear_inheritable()
    st = _status()
    kept = [k for k in ("CapEff", "CapPrm", "CapAmb") if int(st.get(k, "0"), 16)]
    ids = (os.getresuid(), os.getresgid())
    if kept or ids != ((uid,) * 3, (gid,) * 3) or not _no_new_privs(st):
        _fail("dropping privileges did not hold: %r %r NoNewPrivs=%s" % (kept, ids, st.get("NoNewPrivs", "?")))
    try:
        os.setuid(0)
    except OSError:
        pass
    else:
        _fail("root could be regained after the drop")


_setup()
try:
    os.execv(sys.executable or _BOOT[0], _BOOT)
except OSError as exc:
    _fail("cannot start %s as the sandbox user: %s" % (sys.executable or _BOOT[0], exc))
"""


def setup_program(user: str, dirs: Sequence[str], boot_argv: Sequence[str]) -> str:
    """The setup program for ``python3 -I -S -c``: prepare ``dirs`` for ``user``, drop privileges,
    exec ``boot_argv``."""
    head = (
        f"_USER = {user!r}\n_DIRS = {tuple(dirs)!r}\n_BOOT = {list(boot_argv)!r}\n"
        f"_ERR = {SETUP_ERROR!r}\n_EXIT = {SETUP_EXIT!r}\n_MIN = {MIN_PYTHON!r}\n"
    )
    return head + _BODY


def setup_argv(python: str, user: str, dirs: Sequence[str], boot_argv: Sequence[str]) -> list[str]:
    """``[python, "-I", "-S", "-c", program]``: isolated mode (no cwd on sys.path, no ``PYTHON*``
    variables, no user site) and no ``site`` at all (no ``.pth`` file runs)."""
    return [python, "-I", "-S", "-c", setup_program(user, dirs, boot_argv)]


def is_root_user(user: str) -> bool:
    """True when the ``user`` option asks for root on purpose (``0``, ``root``, ``0:…``, ``root:…``):
    the container then runs as that user without the setup step and without any capability."""
    return user.partition(":")[0] in ("0", "root")
