"""Who is calling: the tenant from `X-Tenant-Id` or a bearer JWT's `tenant_id` claim, and, for operations
that need some, the caller's roles: in dev mode `X-Roles` and the token's `roles` claim, in jwt mode only the
verified token's `roles` claim."""

import re
from typing import Any

import jwt
from starlette.requests import Request

from . import errors
from .preconditions import single_header
from .schemas import TENANT_PATTERN
from .settings import Settings

_TENANT = re.compile(TENANT_PATTERN)


class Authenticator:
    """Resolves the tenant of a request, and checks its roles where an operation needs some. In `jwt` mode
    tokens are verified, a bare header is refused and `X-Roles` is ignored."""

    def __init__(self, settings: Settings) -> None:
        self.verify = settings.auth_mode == "jwt"
        self.key = settings.jwt_secret or settings.jwt_public_key or ""
        self.algorithms = list(settings.jwt_algorithms)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience

    def tenant(self, request: Request) -> str:
        return self._identify(request)[0]

    def tenant_with_roles(self, request: Request, needed: tuple[str, ...]) -> str:
        """The tenant of a caller holding every role in `needed`; 403 naming the first one missing."""
        tenant, claims = self._identify(request)
        held = set(_claimed_roles(claims))
        if not self.verify:
            held.update(_listed_roles(request))
        for role in needed:
            if role not in held:
                raise errors.ROLE_REQUIRED.error(role=role)
        return tenant

    def _identify(self, request: Request) -> tuple[str, dict[str, Any] | None]:
        """The tenant, and the token's claims when a token was sent."""
        header = single_header(request.headers, "X-Tenant-Id")
        authorization = single_header(request.headers, "Authorization")
        claims = self._claims(authorization) if authorization is not None else None
        claimed = claims["tenant_id"] if claims is not None else None
        if self.verify and claimed is None:
            raise errors.TOKEN_REQUIRED.error()
        if claimed is None and header is None:
            raise errors.IDENTITY_REQUIRED.error()
        if claimed is not None and header is not None and header != claimed:
            raise errors.TENANT_MISMATCH.error()
        tenant = claimed if claimed is not None else header
        assert tenant is not None
        if not _TENANT.fullmatch(tenant):  # `$` alone would let a trailing newline through
            raise errors.BAD_TENANT.error()
        request.scope["orders.tenant"] = tenant
        return tenant, claims

    def _claims(self, authorization: str) -> dict[str, Any]:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.BAD_AUTHORIZATION.error()
        claims = self._decode(token)
        tenant = claims.get("tenant_id")
        if not isinstance(tenant, str):
            raise errors.TOKEN_WITHOUT_TENANT.error()
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            if not self.verify:
                return jwt.decode(token, options={"verify_signature": False})
            return jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise errors.TOKEN_EXPIRED.error() from None
        except jwt.PyJWTError:
            raise errors.TOKEN_INVALID.error() from None


def _claimed_roles(claims: dict[str, Any] | None) -> list[str]:
    """The token's `roles` claim: an array of strings; anything else grants no role."""
    roles = claims.get("roles") if claims is not None else None
    if not isinstance(roles, list):
        return []
    return [role for role in roles if isinstance(role, str)]


def _listed_roles(request: Request) -> list[str]:
    """`X-Roles: admin, support`: a list header, so several field lines are one comma-joined list."""
    return [role.strip(" \t") for line in request.headers.getlist("X-Roles") for role in line.split(",")]
