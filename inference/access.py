"""Who calls: the API token in ``Authorization: Bearer <token>`` (the same
tokens as the web API) and its rate limit. Used by the inference process's
views and by the router in front of replicas (no torch here)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from rest_framework.authtoken.models import Token

from inference.conf import setting
from inference.errors import InferenceError
from inference.ratelimit import limiter, parse_rate


def caller_for(authorization: str, *, count: bool = True) -> AbstractBaseUser:
    """The token's user. With ``count``, the request counts against the
    token's rate limit (429 past it); a request that the router forwards was
    counted by the router, once."""
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() not in ("bearer", "token") or not key:
        raise InferenceError(
            "You didn't provide an API key: send 'Authorization: Bearer <token>' "
            "with your Arbiter API token (create one on your profile page).",
            status=401,
            code="invalid_api_key",
        )
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        raise InferenceError(
            "Incorrect API key provided.", status=401, code="invalid_api_key"
        )
    rate = parse_rate(setting("ARBITER_INFERENCE_RATE_LIMIT")) if count else None
    if rate is not None:
        retry_after = limiter.hit(token.key, rate)
        if retry_after is not None:
            raise InferenceError(
                f"Rate limit reached: {rate.count} requests per "
                f"{rate.seconds:g} s for this token. Try again in {retry_after} s.",
                status=429,
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry_after)},
            )
    return token.user
