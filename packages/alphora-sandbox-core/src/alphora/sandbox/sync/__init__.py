"""The sync API: the same classes as :mod:`alphora.sandbox`, called without ``await``.

::

    from alphora.sandbox.sync import Sandbox

    with Sandbox.create_local() as sandbox:
        result = sandbox.run("print('Hello, World!')")
        print(result.stdout)

For plain scripts and sync agent frameworks (smolagents, CrewAI, LangChain tools). Each class has
the async class's methods, names, arguments and docs; ``async with`` becomes ``with``, ``async for``
becomes ``for`` and ``SandboxTools.aclose`` becomes ``close``. Calls work from any thread that does
not run an asyncio event loop, several threads at a time; from a thread that runs one they raise
:class:`SyncInAsyncError` (use the async API there).

The calls run on one shared event loop in a background thread that lives only while a sync object
needs it (a running sandbox or manager): when the last one is stopped, destroyed or shut down, the
thread ends. ``on_output`` callbacks run on that thread.
"""

from ._generated import PythonSession, Sandbox, SandboxManager, SandboxPool, SandboxTools
from ._portal import SyncInAsyncError, loop_thread_alive

__all__ = [
    "PythonSession",
    "Sandbox",
    "SandboxManager",
    "SandboxPool",
    "SandboxTools",
    "SyncInAsyncError",
    "loop_thread_alive",
]
