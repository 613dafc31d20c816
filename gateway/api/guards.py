"""Who may call: the checks handlers take as dependencies, each raising the error to answer.

* ``api_key_id``: a client's gateway key (None when the gateway is open);
* ``limited_key_id``: the same, then its rate limit and monthly budget (the answering
  endpoints);
* ``admin``: the admin key as a bearer token (the admin endpoints).

A failed key check is counted against the caller's address (:mod:`gateway.api.failed_auth`):
an address that fails too often gets 429 on its key checks for a while, and each failure is
logged without the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from litestar import Request
from litestar.di import NamedDependency, Provide

from understudy.gateway.api import auth
from understudy.gateway.api.failed_auth import client_address
from understudy.gateway.api.services import Services
from understudy.gateway.errors import AuthenticationError, PermissionDeniedError


@dataclass(frozen=True)
class Admin:
    """Proof that the caller presented the admin key."""

    key_id: str


def api_key_id(request: Request, services: NamedDependency[Services]) -> str | None:
    settings = services.settings
    headers = request.headers
    failed = services.failed_auth
    address = client_address(request)
    failed.check(address)
    try:
        return auth.authenticate(
            settings.api_keys,
            headers.get("authorization"),
            headers.get(auth.KEY_HEADER),
            settings.teacher.pass_through_auth,
        )
    except AuthenticationError:
        failed.failed(address, request.url.path)
        raise


async def limited_key_id(request: Request, services: NamedDependency[Services]) -> str | None:
    # Depends on ``services`` alone (not on ``api_key_id``, ``limits``): litestar resolves a
    # level of several dependencies in a task group, which costs the answering endpoints
    # about a tenth of their throughput (bench/overhead.py). Async: a monthly budget's
    # database step runs on a worker thread.
    key_id = api_key_id(request, services)
    limits = services.limits
    refused = await limits.check_async(request) if limits is not None else None
    if refused is None:
        return key_id
    error, wait_s = refused
    raise error.with_headers({"retry-after": str(max(1, math.ceil(wait_s)))})


def admin(request: Request, services: NamedDependency[Services]) -> Admin:
    key = services.settings.admin_key
    if not key:
        raise PermissionDeniedError("Admin endpoints are disabled: set admin_key to enable them.")
    address = client_address(request)
    services.failed_auth.check(address)
    if not auth.matches(auth.bearer(request.headers.get("authorization")), [key]):
        services.failed_auth.failed(address, request.url.path)
        raise AuthenticationError("This endpoint needs the admin key as a bearer token.")
    return Admin(auth.key_id(key))


GUARDS = {
    "api_key_id": Provide(api_key_id, sync_to_thread=False),
    "limited_key_id": Provide(limited_key_id),
    "admin": Provide(admin, sync_to_thread=False),
}
