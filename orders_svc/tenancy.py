"""Who is calling: the tenant from `X-Tenant-Id` or a bearer JWT's `tenant_id` claim."""

import re
from typing import Any

import jwt
from starlette.requests import Request

from .errors import ApiError
from .preconditions import single_header
from .schemas import TENANT_PATTERN
from .settings import Settings

_TENANT = re.compile(TENANT_PATTERN)


class Authenticator:
    """Resolves the tenant of a request. In `jwt` mode tokens are verified and a bare header is refused."""

    def __init__(self, settings: Settings) -> None:
        self.verify = settings.auth_mode == "jwt"
        self.key = settings.jwt_secret or settings.jwt_public_key or ""
        self.algorithms = list(settings.jwt_algorithms)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience

    def tenant(self, request: Request) -> str:
        header = single_header(request.headers, "X-Tenant-Id")
        authorization = single_header(request.headers, "Authorization")
        claimed = self._claim(authorization) if authorization is not None else None
        if self.verify and claimed is None:
            raise ApiError(401, "a verified bearer token is required", headers=_CHALLENGE)
        if claimed is None and header is None:
            raise ApiError(401, "send X-Tenant-Id or Authorization: Bearer <JWT>", headers=_CHALLENGE)
        if claimed is not None and header is not None and header != claimed:
            raise ApiError(403, "X-Tenant-Id does not match the token's tenant")
        tenant = claimed if claimed is not None else header
        assert tenant is not None
        if not _TENANT.fullmatch(tenant):  # `$` alone would let a trailing newline through
            raise ApiError(400, "tenant id must be 1-64 characters of [A-Za-z0-9._:-]")
        request.scope["orders.tenant"] = tenant
        return tenant

    def _claim(self, authorization: str) -> str:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Authorization must be 'Bearer <JWT>'", headers=_CHALLENGE)
        claims = self._decode(token)
        tenant = claims.get("tenant_id")
        if not isinstance(tenant, str):
            raise ApiError(401, "the token has no string tenant_id claim", headers=_CHALLENGE)
        return tenant

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
            raise ApiError(401, "the token has expired", headers=_CHALLENGE) from None
        except jwt.PyJWTError:
            raise ApiError(401, "the token is not a valid JWT", headers=_CHALLENGE) from None


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
