"""The official openai Node SDK (npm `openai`, unmodified) against `bgmode serve`: its stream helper
reads a cancelled background stream to the end and resolves with status "cancelled", replays a
response by id, and accumulates a tool-calling stream with reasoning. `scripts/test` installs the
package (tests/node/package-lock.json); CI fails instead of skipping when Node is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving import BgmodeServer

NODE_DIR = Path(__file__).parent / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node and tests/node/node_modules are required in CI (scripts/test installs them)")
        pytest.skip("node or the npm openai package is not installed (run scripts/test)")
    return node


def test_node_stream_helper_cancel_replay_and_tools(bgmode_server: BgmodeServer) -> None:
    node = node_or_skip()
    run = subprocess.run(
        [node, str(NODE_DIR / "stream_cancel.mjs"), bgmode_server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["cancel"] == {"cancel_status": "cancelled", "final_status": "cancelled", "last_type": "response.failed"}
    assert out["replay_status"] == "cancelled"
    assert [t["type"] for t in out["tools"]] == ["reasoning", "function_call"]
    call = out["tools"][1]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "example city"}
