"""Contract test suites every backend and storage must pass, ours and third parties'.

Subclass in your own test module and provide the factory::

    from alphora.sandbox.testing import BackendContractTests

    class TestMyBackend(BackendContractTests):
        async def make_backend(self, workspace):
            return MyBackend("contract", workspace)

Needs pytest and pytest-asyncio (``asyncio_mode = "auto"`` or mark the class).
"""

from __future__ import annotations

from ._backend import BackendContractTests
from ._storage import StorageContractTests

__all__ = ["BackendContractTests", "StorageContractTests"]
