"""`bgmode mcp`: background responses as Model Context Protocol tools, over stdio.

An agent starts a long model call with `start_background_response`, goes on with its work,
and checks on it with `wait_for_response` (bounded, with a cursor of the text it has seen),
`get_response`, `cancel_response` and `list_jobs`. Every id goes into the client ledger
before the tool answers, as with `bgmode run`, so `bgmode jobs` and `bgmode monitor` see it
too. Failures are MCP tool errors carrying the API's message; the server itself never stops
on one. Long output comes in pieces: `offset`/`max_chars` in, `next_offset` out.

Built on the official `mcp` SDK (`MCPServer`); the tools are plain functions, run in worker
threads by the SDK, over the same `BackgroundClient` the CLI uses.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from openai.types.responses import Response
from pydantic import Field

from bgmode.client.api import (
    BackgroundClient,
    Backoff,
    FollowTimeout,
    RequestRejected,
    ResponseExpired,
    ResponseRequest,
    SubmitError,
    describe_error,
)
from bgmode.client.defaults import DEFAULT_MODEL, DEFAULT_REASONING_EFFORT, DEFAULT_VERBOSITY
from bgmode.client.ledger import Ledger
from bgmode.client.outcome import TERMINAL_STATUSES
from bgmode.client.session import resolve_base_url

#: default and largest wait of `wait_for_response` (MCP clients commonly time tools out at 60 s)
DEFAULT_WAIT_SECONDS = 25.0
MAX_WAIT_SECONDS = 50.0
#: characters of output text per answer unless the agent asks for another amount
DEFAULT_MAX_CHARS = 20_000
MAX_CHARS = 200_000
#: seconds between polls while waiting
WAIT_POLL_SECONDS = 1.0

INSTRUCTIONS = """\
Run long model calls in the background with bgmode. start_background_response returns a
response id at once; then call wait_for_response with that id (and the cursor it returned last
time) until done is true, doing other work in between if you like. get_response reads the
current state and output (use offset/next_offset for long outputs); cancel_response stops a job;
list_jobs shows the jobs this machine started, newest first."""

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
Verbosity = Literal["low", "medium", "high"]


def _dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _text_window(text: str, offset: int, max_chars: int) -> dict[str, Any]:
    """`text[offset:offset+max_chars]` and where to continue (None: nothing more)."""
    offset = max(0, min(offset, len(text)))
    piece = text[offset : offset + max_chars]
    end = offset + len(piece)
    return {
        "output_text": piece,
        "offset": offset,
        "output_chars": len(text),
        "next_offset": end if end < len(text) else None,
    }


class BackgroundTools:
    """The tools' logic, independent of MCP (errors are `ToolError`s)."""

    def __init__(self, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key_env = api_key_env

    # ---------------------------------------------------------------- plumbing

    def _ledger(self) -> Ledger:
        try:
            return Ledger()
        except Exception as err:
            raise ToolError(f"cannot open the bgmode ledger: {err}") from err

    def _client(self, ledger: Ledger, response_id: str | None = None) -> BackgroundClient:
        """A client for a new job, or for `response_id` (on the server the ledger names for it).

        Ids the ledger does not know are not added to it: `list_jobs` shows the jobs started here.
        """
        known = None
        use_ledger: Ledger | None = ledger
        if response_id is not None:
            job = ledger.get(response_id)
            known = job.base_url if job is not None else None
            use_ledger = ledger if job is not None else None
        base_url = resolve_base_url(self.base_url, known)
        api_key = os.environ.get(self.api_key_env) or None
        if api_key is None and urlparse(base_url).hostname == "api.openai.com":
            raise ToolError(f"no API key: set ${self.api_key_env} in the MCP server's environment")
        return BackgroundClient(
            base_url=base_url,
            api_key=api_key,
            ledger=use_ledger,
            backoff=Backoff(initial=0.25, maximum=2.0, max_retry_after=10.0),
            request_timeout=30.0,
        )

    @staticmethod
    def _fail(err: BaseException, response_id: str | None = None) -> ToolError:
        if isinstance(err, ResponseExpired):
            return ToolError(f"unknown response {err.response_id} (it does not exist or has expired): {err}")
        if isinstance(err, SubmitError | RequestRejected):
            return ToolError(str(err))
        if isinstance(err, FollowTimeout):
            return ToolError(f"the server did not answer in time for {response_id}; try again")
        return ToolError(describe_error(err))

    @staticmethod
    def _state(response: Response) -> dict[str, Any]:
        return {
            "response_id": response.id,
            "status": response.status,
            "done": response.status in TERMINAL_STATUSES,
            "model": response.model,
            "usage": _dump(response.usage) if response.usage is not None else None,
            "error": _dump(response.error) if response.error is not None else None,
            "incomplete_details": _dump(response.incomplete_details) if response.incomplete_details else None,
        }

    # ---------------------------------------------------------------- tools

    def start(
        self,
        *,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        model: str,
        reasoning_effort: str | None,
        verbosity: str | None,
        instructions: str | None,
        max_output_tokens: int | None,
        metadata: dict[str, str] | None,
    ) -> dict[str, Any]:
        if (prompt is None) == (messages is None):
            raise ToolError("give exactly one of prompt or messages")
        if messages is not None and not messages:
            raise ToolError("messages must not be empty")
        request = ResponseRequest(
            input=prompt if prompt is not None else list(messages or []),
            model=model,
            reasoning_effort=reasoning_effort,
            verbosity=verbosity,
            metadata=dict(metadata or {}),
            max_output_tokens=max_output_tokens,
            instructions=instructions,
        )
        ledger = self._ledger()
        client = self._client(ledger)
        try:
            response = client.submit(request, timeout=45)
        except Exception as err:
            raise self._fail(err) from err
        return {
            "response_id": response.id,
            "status": response.status,
            "model": response.model,
            "base_url": client.base_url,
            "next": "call wait_for_response with this response_id (cursor 0) until done is true",
        }

    def get(self, response_id: str, *, offset: int, max_chars: int) -> dict[str, Any]:
        ledger = self._ledger()
        client = self._client(ledger, response_id)
        try:
            response = client.get(response_id, timeout=30)
        except Exception as err:
            raise self._fail(err, response_id) from err
        return {**self._state(response), **_text_window(response.output_text, offset, max_chars)}

    def wait(self, response_id: str, *, cursor: int, timeout_seconds: float, max_chars: int) -> dict[str, Any]:
        ledger = self._ledger()
        client = self._client(ledger, response_id)
        started = time.monotonic()
        deadline = started + max(0.0, min(timeout_seconds, MAX_WAIT_SECONDS))
        response: Response | None = None
        unreachable: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = client.get(response_id, timeout=max(0.5, remaining))
                unreachable = None
            except FollowTimeout:
                unreachable = "the server did not answer (it may be restarting); the job is kept, call again"
            except (ResponseExpired, RequestRejected) as err:
                raise self._fail(err, response_id) from err
            except Exception as err:
                raise self._fail(err, response_id) from err
            if response is not None and response.status in TERMINAL_STATUSES:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(WAIT_POLL_SECONDS, remaining))
        out: dict[str, Any] = {"response_id": response_id, "status": None, "done": False}
        text = ""
        if response is not None:
            out = self._state(response)
            text = response.output_text
        cursor = max(0, min(cursor, len(text)))
        new = text[cursor : cursor + max_chars]
        out.update(
            {
                "new_text": new,
                "cursor": cursor + len(new),
                "output_chars": len(text),
                "more_text": cursor + len(new) < len(text),
                "waited_seconds": round(time.monotonic() - started, 3),
            }
        )
        if unreachable is not None:
            out["note"] = unreachable
        elif not out["done"]:
            out["note"] = "still running: call wait_for_response again with the returned cursor"
        elif out["more_text"]:
            out["note"] = "done; more text follows: call again with the returned cursor"
        return out

    def cancel(self, response_id: str) -> dict[str, Any]:
        ledger = self._ledger()
        client = self._client(ledger, response_id)
        try:
            response = client.cancel(response_id, timeout=30)
        except Exception as err:
            raise self._fail(err, response_id) from err
        return self._state(response)

    def list_jobs(self, *, limit: int, refresh: bool) -> dict[str, Any]:
        ledger = self._ledger()
        jobs = ledger.newest(limit)
        out: list[dict[str, Any]] = []
        budget = time.monotonic() + 20
        for job in jobs:
            status = job.status
            if refresh and job.response_id and status not in TERMINAL_STATUSES and time.monotonic() < budget:
                try:
                    status = self._client(ledger, job.response_id).get(job.response_id, timeout=5).status or status
                except ResponseExpired:
                    status = "expired"
                    ledger.update_status(job.response_id, status)
                except Exception:
                    pass  # keep the ledger's status
            out.append(
                {
                    "response_id": job.response_id,
                    "status": status,
                    "model": job.model,
                    "prompt": job.prompt_summary,
                    "base_url": job.base_url,
                    "created_at": job.created_at,
                }
            )
        return {"jobs": out, "count": len(out)}


def build_server(*, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> MCPServer:
    """The MCP server with its five tools."""
    tools = BackgroundTools(base_url=base_url, api_key_env=api_key_env)
    server: MCPServer = MCPServer(name="bgmode", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    def start_background_response(
        prompt: Annotated[str | None, Field(description="The user prompt (or give messages instead).")] = None,
        messages: Annotated[
            list[dict[str, Any]] | None,
            Field(
                description="Input messages instead of a prompt: "
                '[{"role": "user", "content": "..."}] or content parts [{"type": "input_text", "text": "..."}].'
            ),
        ] = None,
        model: Annotated[str, Field(description="Model name.")] = DEFAULT_MODEL,
        reasoning_effort: Annotated[ReasoningEffort | None, Field(description="Reasoning effort.")] = (
            DEFAULT_REASONING_EFFORT  # type: ignore[assignment]
        ),
        verbosity: Annotated[Verbosity | None, Field(description="Output verbosity.")] = (
            DEFAULT_VERBOSITY  # type: ignore[assignment]
        ),
        instructions: Annotated[str | None, Field(description="System/developer instructions.")] = None,
        max_output_tokens: Annotated[int | None, Field(ge=16, description="Cap on output tokens.")] = None,
        metadata: Annotated[
            dict[str, str] | None, Field(description="Request metadata (string keys and values).")
        ] = None,
    ) -> dict[str, Any]:
        """Start a model call as a background response and return its id at once (status "queued").

        The job keeps running on the server whatever happens to this session. Follow it with
        wait_for_response (or get_response); stop it with cancel_response.
        """
        return tools.start(
            prompt=prompt,
            messages=messages,
            model=model,
            reasoning_effort=reasoning_effort,
            verbosity=verbosity,
            instructions=instructions,
            max_output_tokens=max_output_tokens,
            metadata=metadata,
        )

    @server.tool()
    def get_response(
        response_id: Annotated[str, Field(description="The id start_background_response returned (resp_...).")],
        offset: Annotated[int, Field(ge=0, description="First character of output_text to return.")] = 0,
        max_chars: Annotated[
            int, Field(ge=1, le=MAX_CHARS, description="Most characters of output_text to return.")
        ] = DEFAULT_MAX_CHARS,
    ) -> dict[str, Any]:
        """Read a background response once: status, output text (partial while in progress), usage, error.

        When next_offset is not null the text was longer than max_chars: call again with
        offset=next_offset for the rest.
        """
        return tools.get(response_id, offset=offset, max_chars=max_chars)

    @server.tool()
    def wait_for_response(
        response_id: Annotated[str, Field(description="The id start_background_response returned (resp_...).")],
        cursor: Annotated[
            int, Field(ge=0, description="The cursor the previous call returned (0 the first time).")
        ] = 0,
        timeout_seconds: Annotated[
            float, Field(ge=0, le=MAX_WAIT_SECONDS, description="Longest wait in seconds.")
        ] = DEFAULT_WAIT_SECONDS,
        max_chars: Annotated[
            int, Field(ge=1, le=MAX_CHARS, description="Most characters of new text to return.")
        ] = DEFAULT_MAX_CHARS,
    ) -> dict[str, Any]:
        """Wait until the response is finished or timeout_seconds pass, then return its status and the
        output text that is new since `cursor`.

        Returns done (true once completed, failed, cancelled or incomplete), new_text, and the
        cursor to pass next time. Call again while done is false or more_text is true.
        """
        return tools.wait(response_id, cursor=cursor, timeout_seconds=timeout_seconds, max_chars=max_chars)

    @server.tool()
    def cancel_response(
        response_id: Annotated[str, Field(description="The id of the background response to cancel.")],
    ) -> dict[str, Any]:
        """Cancel a queued or running background response (cancelling twice is fine). A finished one
        cannot be cancelled: that is an error naming its state."""
        return tools.cancel(response_id)

    @server.tool()
    def list_jobs(
        limit: Annotated[int, Field(ge=1, le=500, description="How many jobs, newest first.")] = 20,
        refresh: Annotated[bool, Field(description="Ask the server for the status of unfinished jobs.")] = True,
    ) -> dict[str, Any]:
        """List the background responses started from this machine (the bgmode ledger), newest first,
        with their statuses."""
        return tools.list_jobs(limit=limit, refresh=refresh)

    return server


def serve_stdio(*, base_url: str | None, api_key_env: str) -> None:
    """Run the MCP server on stdin/stdout until the client closes it."""
    build_server(base_url=base_url, api_key_env=api_key_env).run("stdio")
