"""`encrypted_content` for reasoning items: bgmode's own, opaque to clients, opened on return.

With `include: ["reasoning.encrypted_content"]` every reasoning item bgmode produces carries
`encrypted_content`: its summary and reasoning text sealed with authenticated encryption
(Fernet: AES-128-CBC + HMAC-SHA256 from `cryptography`) under a server key. A stateless client
(`store: false`) sends the item back and bgmode opens it into the reasoning the model sees; a
token that does not verify is a 400. Tokens start with `bgm1:`, so an upstream's own
`encrypted_content` (a `responses` route) is told apart and passed through untouched.

The key: `--reasoning-key` / `BGMODE_REASONING_KEY` (any string; hashed to a key), else a
random key kept in the store (`Store.secret`), shared by every process on that store.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from bgmode.errors import InvalidRequest

PREFIX = "bgm1:"


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))

    @classmethod
    def generate_key(cls) -> bytes:
        return os.urandom(32)

    def seal(self, item: dict[str, Any]) -> str:
        """The token for a finished reasoning item (its summary and content)."""
        payload = orjson.dumps({"summary": item.get("summary") or [], "content": item.get("content") or []})
        return PREFIX + self._fernet.encrypt(payload).decode()

    def open(self, token: str, param: str) -> dict[str, Any]:
        """The summary and content sealed in `token`; a 400 naming `param` if it does not verify."""
        try:
            data = orjson.loads(self._fernet.decrypt(token[len(PREFIX) :].encode()))
        except (InvalidToken, orjson.JSONDecodeError, ValueError):
            raise InvalidRequest(
                "The encrypted content could not be verified: it was not produced by this server "
                "(or its reasoning key changed).",
                param=param,
                code="invalid_encrypted_content",
            ) from None
        return {"summary": data.get("summary") or [], "content": data.get("content") or []}

    def open_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`items` with bgmode's own reasoning tokens opened into summary/content."""
        out = items
        for i, it in enumerate(items):
            enc = it.get("encrypted_content") if it.get("type") == "reasoning" else None
            if isinstance(enc, str) and enc.startswith(PREFIX):
                if out is items:
                    out = list(items)
                opened = {k: v for k, v in it.items() if k != "encrypted_content"}
                opened.update(self.open(enc, f"input[{i}].encrypted_content"))
                out[i] = opened
        return out
