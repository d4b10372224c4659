"""Contract test suites every backend and storage must pass, ours and third parties'.

Subclass in your own test module and provide the factory::

    from alphora.sandbox.testing import BackendContractTests

    class TestMyBackend(BackendContractTests):
        async def make_backend(self, workspace):
            return MyBackend("contract", workspace)

Needs pytest and pytest-asyncio (``asyncio_mode = "auto"`` or mark the class).

Besides processes, files, usage and sessions, :class:`BackendContractTests` plants hostile entries
from sandbox code: hard links to files outside the workspace, FIFOs, and a directory and a file
swapped for symlinks to outside while the file API hammers them. A backend that checks a path and
then opens the path string fails those (``tests/core/test_naive_backend.py`` shows it). Class
attributes tune the bounds for slow environments: ``timeout_slack``, ``fifo_bound``,
``race_bound`` (seconds) and ``race_rounds``.
"""

from __future__ import annotations

from ._backend import BackendContractTests
from ._storage import StorageContractTests

__all__ = ["BackendContractTests", "StorageContractTests"]
