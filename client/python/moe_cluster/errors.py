"""The exceptions a call raises, and the one table that maps the server's error codes to them.

The server sends every error as a Cap'n Proto exception whose description is ``Code: message``
(``common/rpc_status.cc``; README "Error codes"), after Cap'n Proto's ``remote exception: `` prefix.
The code picks the class; the message is the server's, unchanged. Exceptions that Cap'n Proto
raised itself (a dropped connection) carry no code: their KJ type picks the class, as the C++
client's ``statusFromException`` does.
"""

from __future__ import annotations

import asyncio


class Error(Exception):
    """Any failed call. ``code`` is the server's error code name (``"InvalidArgument"``, …);
    ``str(error)`` is the server's message."""

    code = "Internal"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(Error, ValueError):
    """The request is wrong (shape, dtype, layer, NaN, …); retrying will not help."""

    code = "InvalidArgument"


class FailedPrecondition(Error):
    """The service is not in a state to serve the request."""

    code = "FailedPrecondition"


class Unavailable(Error, ConnectionError):
    """The router, or a shard it needs, cannot be reached or is draining; retry later."""

    code = "Unavailable"


class DeadlineExceeded(Error, TimeoutError):
    """The call's deadline (the client's ``timeout_s`` or one of the server's) passed first."""

    code = "DeadlineExceeded"


class ResourceExhausted(Error):
    """A limit or a queue is full; retry later or send less."""

    code = "ResourceExhausted"


class Internal(Error):
    """A failure inside the cluster."""

    code = "Internal"


# The one table: server code name -> exception class. A description that names no code falls back
# on its KJ exception type (below).
CODES: dict[str, type[Error]] = {
    cls.code: cls
    for cls in (InvalidArgument, FailedPrecondition, Unavailable, DeadlineExceeded,
                ResourceExhausted, Internal)
}
_KJ_TYPES: dict[str, type[Error]] = {
    "DISCONNECTED": Unavailable,
    "OVERLOADED": ResourceExhausted,
}
_REMOTE_PREFIX = "remote exception: "


def from_description(description: str, kj_type: str | None = None) -> Error:
    """The exception for a Cap'n Proto exception's description (and its KJ type)."""
    text = description
    while text.startswith(_REMOTE_PREFIX):
        text = text[len(_REMOTE_PREFIX):]
    name, sep, message = text.partition(":")
    cls = CODES.get(name) if sep else None
    if cls is not None:
        return cls(message.lstrip(" "))
    return _KJ_TYPES.get(kj_type or "", Internal)(text)


def translate(exc: BaseException, address: str) -> BaseException:
    """The moe_cluster exception for anything a call raised; other exceptions pass through."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return DeadlineExceeded(f"{address}: {exc or 'call did not complete in time'}")
    if isinstance(exc, OSError):
        return Unavailable(f"{address}: {exc.strerror or exc}")
    description = getattr(exc, "description", None)
    if description is not None and type(exc).__name__ == "KjException":
        return from_description(str(description), getattr(exc, "type", None))
    return exc


def connection_lost(exc: BaseException) -> bool:
    """Whether the connection itself failed (so the client must reconnect), as opposed to an
    error the server sent over a working connection."""
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return True
    description = getattr(exc, "description", None)
    return (type(exc).__name__ == "KjException" and getattr(exc, "type", None) == "DISCONNECTED"
            and not str(description or "").startswith(_REMOTE_PREFIX))
