"""`GET /v1/models`: what this server answers to.

- Named routes are listed as they are (`Router.models`).
- A `*` route served by the simulator adds `SIM_MODELS`, a documented set of names clients
  commonly ask for (any other name works too).
- A `*` route to an upstream adds what the upstream lists (`GET {base_url}/models`, with the
  route's key), cached for `CACHE_SECONDS`; an upstream that cannot be listed adds nothing
  (logged), and the named routes are still listed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from bgmode.routing import Router

log = logging.getLogger("bgmode.models")

#: listed for a simulated `*` route (every other name is served as well)
SIM_MODELS = ("sim", "gpt-5.2", "gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4o", "gpt-4o-mini", "o4-mini")
CACHE_SECONDS = 60.0
TIMEOUT_SECONDS = 5.0


class ModelList:
    def __init__(self, router: Router) -> None:
        self.router = router
        self._cached: list[dict[str, Any]] | None = None
        self._cached_at = 0.0

    async def entries(self) -> list[dict[str, Any]]:
        out = self.router.models()
        star = self.router.routes.get("*")
        if star is None:
            return out
        named = {m["id"] for m in out}
        if star.kind == "sim":
            extra = [
                {"id": name, "object": "model", "created": self.router.created, "owned_by": "bgmode:sim"}
                for name in SIM_MODELS
            ]
        else:
            extra = await self._upstream(star.backend)
        return out + [m for m in extra if m["id"] not in named]

    async def _upstream(self, backend: Any) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached_at < CACHE_SECONDS:
            return self._cached
        settings = getattr(backend, "settings", None)
        base_url = getattr(settings, "base_url", None)
        if not base_url:
            return []
        headers = {"user-agent": "bgmode"}
        key = getattr(settings, "api_key", None)
        if key:
            headers["authorization"] = f"Bearer {key}"
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
                r = await http.get(str(base_url).rstrip("/") + "/models", headers=headers)
            r.raise_for_status()
            data = r.json().get("data")
            models = [
                {
                    "id": str(m["id"]),
                    "object": "model",
                    "created": m.get("created") if isinstance(m.get("created"), int) else self.router.created,
                    "owned_by": str(m.get("owned_by") or "upstream"),
                }
                for m in data
                if isinstance(m, dict) and m.get("id")
            ]
        except Exception as exc:
            log.warning("listing the upstream's models failed: %s: %s", type(exc).__name__, str(exc)[:200])
            return []
        self._cached, self._cached_at = models, now
        return models
