"""Hostile holders on a Docker pool (tests/core/test_wave2_hostile.py has the rest; docs/serving.md
lists the attacks): the home volume outlives the container, so it is what a holder would tamper with."""

from __future__ import annotations

from pathlib import Path

from alphora.sandbox import ResourceLimits, SandboxPool

#: rewrite ~/.bashrc in place (same size) and put its mtime back: the home volume survives the reset
SAME_SIZE_BASHRC = r"""
import os
p = os.path.expanduser("~/.bashrc")
st = os.stat(p)
data = open(p, "rb").read()
new = b"echo owned #" + data[len(b"echo owned #"):]
assert len(new) == len(data) and new != data
open(p, "wb").write(new)
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
"""


async def test_docker_home_rewritten_in_place_is_destroyed_not_reset(tmp_path: Path, our_image: str) -> None:
    """FOUND (fixed: the fingerprint hashes contents, alphora/sandbox/pool.py): a holder rewrote
    ~/.bashrc with the same size and put its mtime back; the reset kept the home volume and the next
    holder got the planted line. (Our image: the foreign one's home starts empty, nothing to rewrite.)"""
    limits = ResourceLimits(timeout_seconds=30, memory_mb=256, max_processes=64)
    kw = {"base_path": tmp_path, "backend_options": {"image": our_image}, "resource_limits": limits}
    async with SandboxPool("docker", size=1, **kw) as pool:
        async with pool.acquire(timeout=60) as first:
            r = await first.run(SAME_SIZE_BASHRC)
            assert r.success, r.stderr
        await pool.settle()
        stats = pool.stats()
        assert (stats.resets, stats.reset_failures) == (0, 1)
        async with pool.acquire(timeout=60) as second:
            assert second.sandbox_id != first.sandbox_id
            r = await second.run(
                "import os; print(open(os.path.expanduser('~/.bashrc')).read().startswith('echo owned'))"
            )
            assert r.stdout == "False\n", r.stderr
