#!/usr/bin/env python3
"""Submit a background response and follow it until it ends (the skill's run script).

A thin wrapper over `bgmode run --json`: same flags as the background-mode skill (--model,
--reasoning-effort, --verbosity, --prompt | --messages-json-file, --poll-seconds,
--show-output-text) plus bgmode's extras (--output-json, --base-url, --timeout, --stream,
--metadata, --max-output-tokens, ...). Prints one JSON event per line; see `--help`.

    python -u scripts/run_background_response.py --prompt "Hello" --poll-seconds 10 --show-output-text
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from bgmode.client.commands import run
except ImportError:  # running from a checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from bgmode.client.commands import run

if __name__ == "__main__":
    monitor_script = str(Path(sys.argv[0]).with_name("monitor_background_response.py"))
    run.main(
        ["--json", *sys.argv[1:]],
        prog_name=Path(sys.argv[0]).name,
        obj={"resume_argv": [sys.executable, "-u", monitor_script, "--response-id", "{id}"]},
    )
