"""The example backend passes the shared backend contract and plugs in through its entry point."""

from __future__ import annotations

from pathlib import Path

from alphora_example_backend import ExampleBackend

from alphora.sandbox import Sandbox
from alphora.sandbox.backend import Backend
from alphora.sandbox.plugins import get_registry
from alphora.sandbox.testing import BackendContractTests


class TestExampleBackendContract(BackendContractTests):
    async def make_backend(self, workspace: Path) -> Backend:
        return ExampleBackend("contract", workspace)


def test_registered_through_the_entry_point() -> None:
    assert get_registry().backends["example"] is ExampleBackend


async def test_a_sandbox_on_it(tmp_path: Path) -> None:
    async with Sandbox.create("example", base_path=str(tmp_path)) as sandbox:
        result = await sandbox.run("print(6 * 7)")
        assert result.stdout == "42\n", result
        await sandbox.write_file("note.txt", "hi")
        assert [f.path for f in await sandbox.list_files()] == ["note.txt"]  # .tmp is internal
