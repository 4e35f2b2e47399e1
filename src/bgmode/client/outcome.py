"""Statuses and the exit codes every client command and script shares."""

from __future__ import annotations

from enum import IntEnum

#: statuses after which a response never changes again
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete"})
#: statuses of a job that is still queued or running
ACTIVE_STATUSES = frozenset({"queued", "in_progress"})
#: the client's own status for a followed job that vanished (404) or whose data expired
EXPIRED = "expired"


class ExitCode(IntEnum):
    """Process exit codes of `bgmode run|monitor|stream|get|cancel` and the skill scripts."""

    COMPLETED = 0
    FAILED = 1
    USAGE = 2  # click's own code for usage errors
    CANCELLED = 3
    INCOMPLETE = 4
    EXPIRED = 5  # the response is unknown to the server (404): vanished or its data expired
    TIMEOUT = 6  # --timeout reached while following; the job may still be running
    ERROR = 7  # the API rejected a request (e.g. 400/401 on create) or it could not be sent
    INTERRUPTED = 130  # Ctrl-C (SIGINT) while following


_BY_STATUS = {
    "completed": ExitCode.COMPLETED,
    "failed": ExitCode.FAILED,
    "cancelled": ExitCode.CANCELLED,
    "incomplete": ExitCode.INCOMPLETE,
    EXPIRED: ExitCode.EXPIRED,
}


def exit_code_for(status: str | None) -> ExitCode:
    """The exit code for a final status (`completed` -> 0, `failed` -> 1, ...)."""
    return _BY_STATUS.get(status or "", ExitCode.ERROR)


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATUSES
