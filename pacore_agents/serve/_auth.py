"""API-key checking: ``Authorization: Bearer KEY`` compared in constant time.

With no key configured every request is allowed. The key is never logged nor echoed.
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from ._errors import APIError


class KeyChecker:
    """Raises a 401 ``APIError`` unless the request's bearer token is the key (if one is set)."""

    def __init__(self, key: SecretStr | None) -> None:
        self._key = key.get_secret_value().encode() if key is not None and key.get_secret_value() else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, authorization: str | None) -> None:
        if self._key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "missing API key: send the header Authorization: Bearer KEY",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), self._key):
            raise APIError(401, "incorrect API key", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
