"""Client defaults, kept import-light (the CLI reads them before loading the SDK)."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: the background-mode skill's defaults
DEFAULT_MODEL = "gpt-5.2"
DEFAULT_REASONING_EFFORT = "medium"
DEFAULT_VERBOSITY = "medium"
DEFAULT_POLL_SECONDS = 10.0
