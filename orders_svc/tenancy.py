"""Who is calling: the tenant from `X-Tenant-Id` or a bearer JWT's `tenant_id` claim."""

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
        return tenant

    def _claim(self, authorization: str) -> str:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.BAD_AUTHORIZATION.error()
        claims = self._decode(token)
        tenant = claims.get("tenant_id")
        if not isinstance(tenant, str):
            raise errors.TOKEN_WITHOUT_TENANT.error()
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
            raise errors.TOKEN_EXPIRED.error() from None
        except jwt.PyJWTError:
            raise errors.TOKEN_INVALID.error() from None
