"""API keys and roles. Off until a key is configured; then every /v1 and /admin route needs one.

Keys are compared by SHA-256, so the configuration never holds a usable key."""

from __future__ import annotations

import hashlib

from fastapi import Request

from serving.errors import AuthenticationError, PermissionDeniedError
from serving.pipeline.principal import ANONYMOUS, Principal
from serving.settings import ApiKey


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def authenticate(request: Request) -> Principal:
    """Who is calling, from `Authorization: Bearer <key>`; everyone is an admin while auth is off.

    `async` on purpose: FastAPI runs a sync dependency in its thread pool, a thread hop per request that
    measured ~20 % of the gateway's per-request CPU."""
    keys: dict[str, ApiKey] = request.app.state.api_keys
    if not keys:
        principal = ANONYMOUS
    else:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError("Missing API key: send `Authorization: Bearer <key>`.")
        stored = keys.get(key_digest(key.strip()))
        if stored is None:
            raise AuthenticationError("Invalid API key.")
        principal = Principal(stored.id, stored.role, tuple(stored.models), stored.priority)
    request.state.principal = principal
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.role != "admin":
        raise PermissionDeniedError(f"Key `{principal.key_id}` has role `{principal.role}`; admin routes need `admin`.")
    return principal
