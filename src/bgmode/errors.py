"""Errors a client sees, each rendered as OpenAI's envelope.

APIError                      {"error": {message, type, param, code}} with an HTTP status
├── InvalidRequest            400 invalid_request_error
├── NotFound                  404 invalid_request_error ("Response with id '...' not found.")
├── Unauthorized              401 invalid_request_error (code invalid_api_key)
├── BodyTooLarge              413 invalid_request_error
├── RateLimited               429 rate_limit_error, with Retry-After
└── ServiceUnavailable        503 server_error (shutting down)
"""

from __future__ import annotations

from typing import Any

import orjson


class APIError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"


class ResponseNotFound(NotFound):
    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.")


class Unauthorized(APIError):
    status_code = 401
    error_type = "invalid_request_error"


class BodyTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "server_error"
