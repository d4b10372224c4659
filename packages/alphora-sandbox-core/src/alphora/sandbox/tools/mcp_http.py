"""The sandbox tools over MCP's streamable HTTP transport: many clients, one sandbox per session.

``alphora-sandbox mcp --transport http --host 127.0.0.1 --port 8765 --token-file tokens.txt``

* **Authentication**: every request carries ``Authorization: Bearer <token>``; a missing or
  unknown token gets ``401`` before anything else runs. Tokens come from ``--token-file`` (one a
  line: ``TOKEN`` or ``NAME TOKEN``) and the ``ALPHORA_SANDBOX_MCP_TOKENS`` variable (separated by
  commas or whitespace, same forms with ``NAME=TOKEN``). Without any token the server does not
  start, unless ``--no-auth`` is given *and* it listens on a loopback address.
* **One sandbox per MCP session**, created (or taken from the warm pool, ``--warm N``) at the
  session's first ``tools/list`` or ``tools/call``, and destroyed (or reset into the pool) when
  the session ends (the client's ``DELETE``), after ``--idle-timeout`` seconds without a
  request, or when the server stops. A session may only be
  used with the token that opened it (the SDK answers ``404`` otherwise).
* **Limits**: ``--max-sessions-per-token`` open sessions per token (one more gets ``429``) and
  ``--max-sessions`` in all (``503``).

Sessions need the handshake-era protocol (``initialize`` and ``Mcp-Session-Id``); a client that
probes with the sessionless 2026 protocol is told which versions are supported and falls back.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigurationError
from ..rules import is_loopback_host
from .sandbox_tools import SandboxTools

if TYPE_CHECKING:
    from ..pool import SandboxPool
    from ..sandbox import Sandbox

__all__ = [
    "MIN_TOKEN_CHARS",
    "TOKENS_ENV",
    "SessionSandboxes",
    "Token",
    "bind_problem",
    "build_app",
    "load_tokens",
    "serve_http",
]

log = logging.getLogger("alphora.sandbox.mcp")

#: the environment variable holding tokens (``TOKEN`` or ``NAME=TOKEN``, separated by commas or whitespace)
TOKENS_ENV = "ALPHORA_SANDBOX_MCP_TOKENS"
#: shorter tokens are refused: a bearer token is a password that a client sends on every request
MIN_TOKEN_CHARS = 16

_SESSION_HEADER = "mcp-session-id"
_VERSION_HEADER = "mcp-protocol-version"
#: after SIGTERM/SIGINT, how long open requests (a running tool call, an event stream) may take to finish
SHUTDOWN_GRACE_SECONDS = 10

#: how many ended session ids are remembered (answered 404 instead of reaching the SDK)
_ENDED_MEMORY = 10_000


@attrs.frozen
class Token:
    """A client's bearer token; ``name`` (never the secret) appears in logs and in the per-token limit."""

    name: str
    secret: str = attrs.field(repr=False)


def _token(name: str | None, secret: str, where: str) -> Token:
    if len(secret) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"a token in {where} is {len(secret)} characters long; use at least {MIN_TOKEN_CHARS} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            field="token",
            value=where,
        )
    return Token(name or "token-" + hashlib.sha256(secret.encode()).hexdigest()[:8], secret)


def load_tokens(token_file: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> list[Token]:
    """The tokens of ``token_file`` (``TOKEN`` or ``NAME TOKEN`` a line; ``#`` comments) and of the
    :data:`TOKENS_ENV` variable. Raises ConfigurationError for an unreadable file, a token shorter
    than :data:`MIN_TOKEN_CHARS` or a name given twice."""
    tokens: list[Token] = []
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"can't read the token file {path}: {exc.strerror or exc}", field="token_file", value=str(path)
            ) from exc
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) > 2:
                raise ConfigurationError(
                    f"{path}:{number}: expected 'TOKEN' or 'NAME TOKEN', got {len(words)} words",
                    field="token_file",
                    value=str(path),
                )
            tokens.append(_token(words[0] if len(words) == 2 else None, words[-1], f"{path}:{number}"))
    env = os.environ if environ is None else environ
    for item in env.get(TOKENS_ENV, "").replace(",", " ").split():
        name, sep, secret = item.partition("=")
        tokens.append(_token(name if sep else None, secret if sep else item, TOKENS_ENV))
    names = [t.name for t in tokens]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(f"token names given twice: {', '.join(twice)}", field="token", value=twice)
    return tokens


def bind_problem(host: str, tokens: list[Token], no_auth: bool) -> str | None:
    """Why the server must not start with these settings (None: it may)."""
    if no_auth and tokens:
        return "--no-auth was given but tokens are configured; drop one or the other"
    if no_auth and not is_loopback_host(host):
        return (
            f"--no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not {host}: "
            "anyone who can reach the port could run code"
        )
    if not no_auth and not tokens:
        return (
            f"no token configured: give --token-file FILE or set {TOKENS_ENV} "
            "(or --no-auth, on a loopback address only)"
        )
    return None


class _TokenVerifier:
    """The SDK's TokenVerifier: compares in constant time against every configured token."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = [(t.name, t.secret.encode()) for t in tokens]

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        offered = token.encode()
        found = None
        for name, secret in self._tokens:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(offered, secret):
                found = name
        if found is None:
            return None
        return AccessToken(token=token, client_id=found, scopes=[])


#: how long a new session waits for a sandbox from the warm pool (all busy or being reset)
POOL_WAIT_SECONDS = 60.0


@asynccontextmanager
async def session_sandbox(ns: argparse.Namespace, pool: SandboxPool | None = None) -> AsyncIterator[Sandbox]:
    """The sandbox of one MCP session, from start to clean-up: from the warm pool (``--warm``;
    reset clean or destroyed when the session ends, as the pool's policy says) or made for it."""
    if pool is not None:
        async with pool.acquire(timeout=POOL_WAIT_SECONDS) as pooled:
            yield pooled
        return
    from .mcp_server import _make_sandbox

    sandbox = _make_sandbox(ns)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        if ns.keep_workspace:
            await sandbox.stop()
        else:
            await sandbox.destroy()


@attrs.define(eq=False)
class _Session:
    sid: str
    owner: str
    last_activity: float
    in_flight: int = 0
    tools: SandboxTools | None = None
    stack: contextlib.AsyncExitStack | None = None
    lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    closed: bool = False


class SessionSandboxes:
    """The sandbox of each open MCP session: created at the first tools request, destroyed when the
    session ends, after ``idle_timeout`` seconds without a request (a request in progress counts as
    activity; an open event stream does not), or by :meth:`aclose`."""

    def __init__(
        self,
        ns: argparse.Namespace,
        *,
        idle_timeout: float,
        max_per_token: int,
        pool: SandboxPool | None = None,
    ) -> None:
        self.ns = ns
        self.pool = pool
        self.idle_timeout = idle_timeout
        self.max_per_token = max_per_token
        self._sessions: dict[str, _Session] = {}
        self._reserved: collections.Counter[str] = collections.Counter()
        self._ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._reaper: asyncio.Task[None] | None = None

    # -- admission -------------------------------------------------------------------------------

    def open_count(self, owner: str) -> int:
        return sum(1 for s in self._sessions.values() if s.owner == owner) + self._reserved[owner]

    def reserve(self, owner: str) -> bool:
        """Hold a place for a session ``owner`` is opening; False at the per-token limit."""
        if self.open_count(owner) >= self.max_per_token:
            return False
        self._reserved[owner] += 1
        return True

    def opened(self, owner: str, sid: str | None) -> None:
        """The opening request was answered: the reservation becomes a session (or is dropped)."""
        self._reserved[owner] -= 1
        if sid is not None and sid not in self._sessions:
            self._sessions[sid] = _Session(sid, owner, time.monotonic())
            log.info("session %s opened by %s", sid[:8], owner)

    def ended_reason(self, sid: str) -> str | None:
        return self._ended.get(sid)

    def owner_of(self, sid: str) -> str | None:
        s = self._sessions.get(sid)
        return s.owner if s else None

    # -- activity --------------------------------------------------------------------------------

    def begin(self, sid: str) -> None:
        s = self._sessions.get(sid)
        if s is not None:
            s.in_flight += 1
            s.last_activity = time.monotonic()

    def end(self, sid: str) -> None:
        s = self._sessions.get(sid)
        if s is not None:
            s.in_flight -= 1
            s.last_activity = time.monotonic()

    async def tools(self, sid: str) -> SandboxTools:
        """The session's tools over its sandbox, started on first use."""
        s = self._sessions.get(sid)
        if s is None or s.closed:
            raise LookupError(f"session {sid[:8]} is not open")
        async with s.lock:
            if s.closed:
                raise LookupError(f"session {sid[:8]} ended")
            if s.tools is None:
                stack = contextlib.AsyncExitStack()
                try:
                    sandbox = await stack.enter_async_context(session_sandbox(self.ns, self.pool))
                    tools = SandboxTools(
                        sandbox,
                        use_session=self.ns.use_session,
                        include=self.ns.tools,
                        exclude=self.ns.exclude,
                        read_only=self.ns.read_only,
                        max_output_chars=self.ns.max_output_chars,
                    )
                    stack.push_async_callback(tools.aclose)
                except BaseException:
                    await stack.aclose()
                    raise
                s.tools, s.stack = tools, stack
                log.info("session %s: sandbox %s started", sid[:8], sandbox.sandbox_id)
            return s.tools

    # -- ending ----------------------------------------------------------------------------------

    async def close(self, sid: str, reason: str) -> bool:
        """End a session and clean up its sandbox; False when it was not open."""
        s = self._sessions.pop(sid, None)
        if s is None:
            return False
        self._ended[sid] = reason
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)
        s.closed = True
        async with s.lock:  # a sandbox being started is finished first, then cleaned up
            stack, s.stack, s.tools = s.stack, None, None
        if stack is not None:
            try:
                await asyncio.shield(stack.aclose())
            except Exception:
                log.warning("cleaning up the sandbox of session %s failed", sid[:8], exc_info=True)
        log.info("session %s of %s ended (%s)", sid[:8], s.owner, reason)
        return True

    async def reap_idle(self) -> list[str]:
        now = time.monotonic()
        idle = [
            sid
            for sid, s in list(self._sessions.items())
            if s.in_flight == 0 and now - s.last_activity > self.idle_timeout
        ]
        for sid in idle:
            await self.close(sid, f"idle for more than {self.idle_timeout:g} s")
        return idle

    async def _reap_loop(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:
                log.warning("reaping idle sessions failed", exc_info=True)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="alphora-mcp-reaper")

    async def aclose(self) -> None:
        """Stop reaping and end every session (the server is stopping)."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        await asyncio.gather(*(self.close(sid, "server stopping") for sid in list(self._sessions)))


def _json_error(status: int, code: int, message: str, data: Any = None) -> tuple[int, bytes]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return status, json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Gate:
    """ASGI app in front of the SDK's session manager: per-token session limit, ended sessions,
    activity for the idle timeout, the end of a session, and the handshake-era protocol."""

    def __init__(self, inner: Any, sessions: SessionSandboxes) -> None:
        self.inner = inner
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if sum(k.lower() == _SESSION_HEADER.encode() for k, _ in scope["headers"]) > 1:
            # this table keeps the last value, the SDK reads the first: the two would disagree on which
            # session a request belongs to (its owner check, its activity, its end)
            await _respond(send, *_json_error(400, -32600, f"more than one {_SESSION_HEADER} header"))
            return
        user = scope.get("user")
        owner = user.access_token.client_id if isinstance(user, AuthenticatedUser) else "anonymous"
        version = headers.get(_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # sessionless (2026) requests would share no sandbox: make the client use sessions
            await _respond(
                send,
                *_json_error(
                    400,
                    -32022,
                    "this server keeps one sandbox per session: use the initialize handshake",
                    {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": version},
                ),
            )
            return
        sid = headers.get(_SESSION_HEADER)
        method = scope.get("method", "GET")
        if sid is None:
            await self._open(owner, method, scope, receive, send)
            return
        reason = self.sessions.ended_reason(sid)
        if reason is not None:
            await _respond(send, *_json_error(404, -32600, f"Session not found: it ended ({reason})"))
            return
        if method == "GET":  # the event stream: not activity, may stay open for long
            await self.inner(scope, receive, send)
            return
        ours = self.sessions.owner_of(sid) == owner
        if ours and method == "DELETE":  # the session ends: its sandbox is gone when the client hears back
            await self.sessions.close(sid, "closed by the client")
        if ours:
            self.sessions.begin(sid)
        try:
            await self.inner(scope, receive, send)
        finally:
            if ours:
                self.sessions.end(sid)

    async def _open(self, owner: str, method: str, scope: Any, receive: Any, send: Any) -> None:
        if method != "POST":
            await self.inner(scope, receive, send)
            return
        if not self.sessions.reserve(owner):
            limit = self.sessions.max_per_token
            await _respond(send, *_json_error(429, -32000, f"too many open sessions for {owner} (limit {limit})"))
            return
        converted = False

        async def watch(message: Any) -> None:
            nonlocal converted
            if message["type"] == "http.response.start" and message["status"] < 400 and not converted:
                for k, v in message.get("headers", []):
                    if k.decode("latin-1").lower() == _SESSION_HEADER:
                        # registered before the client can hear of the session, so its next request finds it
                        self.sessions.opened(owner, v.decode("latin-1"))
                        converted = True
            await send(message)

        try:
            await self.inner(scope, receive, watch)
        finally:
            if not converted:
                self.sessions.opened(owner, None)


def build_app(
    ns: argparse.Namespace,
    tokens: list[Token],
    *,
    on_ready: Any = None,
) -> tuple[Any, SessionSandboxes]:
    """The Starlette app serving ``/mcp`` and the table of its sessions' sandboxes."""
    import mcp.types as types
    from mcp.server import Server
    from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.routing import Route

    from .mcp_server import INSTRUCTIONS, _call_result, _version, mcp_tool

    pool = None
    if getattr(ns, "warm", 0):
        from ..pool import SandboxPool
        from .mcp_server import sandbox_settings

        backend, sandbox_kwargs = sandbox_settings(ns)
        pool = SandboxPool(backend, size=ns.max_sessions, min_idle=ns.warm, **sandbox_kwargs)
    sessions = SessionSandboxes(ns, idle_timeout=ns.idle_timeout, max_per_token=ns.max_sessions_per_token, pool=pool)

    async def session_tools(ctx: Any) -> SandboxTools:
        """The tools of the request's session; an MCP error the client can read when there are none."""
        from mcp.shared.exceptions import MCPError

        request = getattr(ctx, "request", None)
        sid = request.headers.get(_SESSION_HEADER) if request is not None else None
        if sid is None:
            raise MCPError(code=-32600, message="no MCP session: this server needs the initialize handshake")
        try:
            return await sessions.tools(str(sid))
        except LookupError as exc:
            raise MCPError(code=-32600, message=str(exc)) from exc
        except Exception as exc:
            log.warning("the sandbox of session %s did not start: %s", str(sid)[:8], exc)
            log.debug("the sandbox of session %s did not start", str(sid)[:8], exc_info=True)
            raise MCPError(code=-32603, message=f"the session's sandbox did not start: {exc}") from exc

    async def list_tools(ctx: Any, _params: Any) -> Any:
        tools = await session_tools(ctx)
        return types.ListToolsResult(tools=[mcp_tool(s) for s in tools.specs])

    async def call_tool(ctx: Any, params: Any) -> Any:
        tools = await session_tools(ctx)
        return _call_result(await tools.execute_tool(params.name, params.arguments))

    server = Server(
        "alphora-sandbox",
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    security = None
    if is_loopback_host(ns.host):  # DNS rebinding protection, as the SDK sets it up for loopback hosts
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    manager = StreamableHTTPSessionManager(
        app=server,
        security_settings=security,
        session_idle_timeout=ns.idle_timeout,
        max_sessions=ns.max_sessions,
    )
    endpoint: Any = _Gate(manager.handle_request, sessions)
    middleware: list[Middleware] = []
    if tokens:
        endpoint = RequireAuthMiddleware(endpoint, required_scopes=[])
        middleware.append(Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(_TokenVerifier(tokens))))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with manager.run():
            if pool is not None:
                await pool.start()  # ready once --warm sandboxes are
            sessions.start()
            try:
                if on_ready is not None:
                    on_ready()
                yield
            finally:
                try:
                    await sessions.aclose()
                finally:
                    if pool is not None:
                        await pool.shutdown()

    app = Starlette(routes=[Route("/mcp", endpoint=endpoint)], middleware=middleware, lifespan=lifespan)
    return app, sessions


async def serve_http(ns: argparse.Namespace, tokens: list[Token]) -> None:
    """Serve until SIGINT/SIGTERM; then every session's sandbox is cleaned up before returning."""
    import uvicorn

    family = socket.AF_INET6 if ":" in ns.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ns.host, ns.port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"can't listen on {ns.host}:{ns.port}: {exc.strerror or exc}", field="port", value=ns.port
        ) from exc
    port = sock.getsockname()[1]
    host = f"[{ns.host}]" if family == socket.AF_INET6 else ns.host
    auth = f"{len(tokens)} token(s)" if tokens else "NO AUTHENTICATION (loopback only)"

    def ready() -> None:
        print(f"alphora-sandbox MCP server on http://{host}:{port}/mcp ({auth})", file=sys.stderr, flush=True)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # SIGTERM/SIGINT stop the server gracefully (every session's sandbox is cleaned up) and the
            # process then exits 0 like the stdio server, instead of re-raising the signal (uvicorn's way)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    app, _sessions = build_app(ns, tokens, on_ready=ready)
    config = uvicorn.Config(
        app,
        log_level=ns.log_level.lower(),
        log_config=None,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    await _Server(config).serve(sockets=[sock])
