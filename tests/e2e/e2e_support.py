"""A local HTTP server that plays the model for the real openai/anthropic SDKs.

It speaks the minimal real wire protocol (OpenAI ``POST /v1/chat/completions`` and
``POST /v1/responses``, Anthropic ``POST /v1/messages``, non-streaming JSON), binds only to
127.0.0.1, records every request, and hands each one to a scripted "model" that asserts on what
it received and answers with the next step. An assertion failure inside the script is recorded
and answered with HTTP 400 (no SDK retry), so the test fails with the script's message.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py (the docs' runnable loops) as a module."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


#: (path, request body) -> response body
Responder = Callable[[str, dict[str, Any]], dict[str, Any]]


class FakeLLMServer:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, payload = outer._handle(self.path, raw, {k.lower(): v for k, v in self.headers.items()})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-llm", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handle(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:  # the script is sequential, like a conversation
            try:
                body = json.loads(raw)
                self.requests.append((path, body, headers))
                return 200, self.responder(path, body)
            except Exception as exc:  # noqa: BLE001 - reported to the test, answered as HTTP 400
                self.errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                return 400, {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"fake model: {exc}"},
                }

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# -- response builders in each API's wire shape ---------------------------------------------------


def openai_tool_calls(step: int, calls: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """A chat.completion whose message asks for tool calls: (id, name, arguments) each; arguments
    that are not a str are JSON-encoded as the API does."""
    return {
        "id": f"chatcmpl-{step}",
        "object": "chat.completion",
        "created": 1_700_000_000 + step,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": cid,
                            "type": "function",
                            "function": {
                                "name": name,
                                "arguments": args if isinstance(args, str) else json.dumps(args),
                            },
                        }
                        for cid, name, args in calls
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def openai_text(step: int, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{step}",
        "object": "chat.completion",
        "created": 1_700_000_000 + step,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def anthropic_message(step: int, blocks: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": f"msg_{step}",
        "type": "message",
        "role": "assistant",
        "model": "fake-model",
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def responses_output(step: int, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": f"resp_{step}",
        "object": "response",
        "created_at": 1_700_000_000 + step,
        "status": "completed",
        "model": "fake-model",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
