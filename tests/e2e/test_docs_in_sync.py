"""The integration pages show the example files verbatim: the tested loops are the documented ones."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("example", "page"),
    [
        ("examples/openai_agent.py", "docs/openai.md"),
        ("examples/anthropic_agent.py", "docs/anthropic.md"),
        ("examples/mcp_client.py", "docs/mcp.md"),
        ("examples/mcp_agent.py", "docs/mcp.md"),
        ("examples/mcp_http_client.py", "docs/mcp-http.md"),
        ("examples/sync_quickstart.py", "docs/sync.md"),
    ],
)
def test_page_embeds_the_example_verbatim(example: str, page: str) -> None:
    code = (ROOT / example).read_text().rstrip()
    assert f"```python\n{code}\n```" in (ROOT / page).read_text(), f"{page} is out of date with {example}"
