"""The API key that write endpoints require when one is configured: header ``X-API-Key: KEY`` or
``Authorization: Bearer KEY``, compared in constant time. The key is never logged nor echoed in an error."""

from __future__ import annotations

import hmac

from mtlrec.errors import ConfigError
from mtlrec.serve.service import ServeError


def check_key(expected: str | None, api_key_header: str | None, bearer: str | None) -> None:
    """Pass when no key is configured or the given one matches; else ServeError 401 (none given) or 403 (wrong)."""
    if expected is None:
        return
    given = api_key_header if api_key_header is not None else bearer
    if not given:
        raise ServeError(
            401,
            "this endpoint needs the server's API key: send the header 'X-API-Key: KEY' or "
            "'Authorization: Bearer KEY'",
        )
    # compare_digest takes time independent of where the strings differ (bytes: any characters are fine)
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise ServeError(403, "the API key is not valid for this server")


def validate_key(key: str | None) -> str | None:
    """A configured key must be non-blank, without surrounding whitespace (it would never match a header)."""
    if key is None:
        return None
    if not key.strip():
        raise ConfigError("the API key is empty; set a real key or leave MTLREC_API_KEY / --api-key unset")
    if key != key.strip() or any(c in key for c in "\r\n"):
        raise ConfigError("the API key has surrounding whitespace or a line break; HTTP headers cannot carry it")
    return key
