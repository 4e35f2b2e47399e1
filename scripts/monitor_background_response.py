#!/usr/bin/env python3
"""Follow an existing background response until it ends (the skill's monitor script).

A thin wrapper over `bgmode monitor --json`: the skill's flags (--response-id,
--poll-seconds, --show-output-text) plus bgmode's extras (--output-json, --base-url,
--timeout, --stream, ...). Prints one JSON event per line; see `--help`.

    python -u scripts/monitor_background_response.py --response-id resp_123 --poll-seconds 10
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from bgmode.client.commands import monitor
except ImportError:  # running from a checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from bgmode.client.commands import monitor

if __name__ == "__main__":
    monitor.main(
        ["--json", *sys.argv[1:]],
        prog_name=Path(sys.argv[0]).name,
        obj={"resume_argv": [sys.executable, "-u", sys.argv[0], "--response-id", "{id}"]},
    )
