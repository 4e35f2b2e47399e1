from __future__ import annotations

from bgmode.cli import main

main()
