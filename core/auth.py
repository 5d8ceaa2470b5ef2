"""API token authentication with a short-lived in-process cache.

DRF's ``TokenAuthentication`` reads the token and its user on every request,
and the role check then reads the user's groups: two statements before the
view runs. A labeling client sends the same token many times a minute over a
keep-alive connection (served by one worker process), so this keeps what
those two statements returned, per process, for
``ARBITER_TOKEN_CACHE_SECONDS`` (0 turns the cache off).

Why this is safe:

* Only a successful lookup is cached, keyed by the exact token string; an
  unknown or inactive user's token is never cached, and a cached entry gives
  exactly the user the database gave for that token.
* In the process that makes a change, the change takes effect at once:
  deleting or replacing a token drops its entry, and saving or deleting any
  user, or changing anyone's groups, empties the cache.
* In other processes an entry lives at most the TTL: a revoked token, a
  deactivated user or a removed role keeps working there for at most that
  many seconds (60 by default), the same bound a short-lived signed token
  would give. Everything the token grants is still checked per request
  against the database by the services (lease ownership, campaign
  membership), so the cache widens nothing else.
* Each request gets its own copy of the cached user, so nothing a request
  sets on ``request.user`` leaks into another.

``CachedRolesMiddleware`` does the same for the roles of session users, and
``CachedUserBackend`` keeps session users themselves in the shared Redis
cache, where a change is seen by every process at once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.cache import BaseCache, caches
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from core import roles

logger = logging.getLogger(__name__)
# Enough for every annotator of a large deployment; past it the oldest
# entries go first.
_MAX_ENTRIES = 10_000
_cache: dict[str, tuple[float, Any, Any]] = {}
_lock = threading.Lock()


# Roles of logged-in (session) users, by user id: (expires, group names).
_roles_cache: dict[int, tuple[float, frozenset[str]]] = {}


def _remember(cache: dict[Any, Any], key: Any, entry: tuple[Any, ...]) -> None:
    """Store ``entry`` under ``key``; past ``_MAX_ENTRIES`` the tenth of the
    entries that expire first go."""
    with _lock:
        if len(cache) >= _MAX_ENTRIES:
            for old in sorted(cache, key=lambda k: cache[k][0])[: _MAX_ENTRIES // 10]:
                del cache[old]
        cache[key] = entry


def token_cache_clear() -> None:
    """Forget every cached token and role (this process)."""
    with _lock:
        _cache.clear()
        _roles_cache.clear()


class CachedRolesMiddleware:
    """The roles of a session user, reused for ``ARBITER_TOKEN_CACHE_SECONDS``
    in this process (what ``core.roles`` would read from the groups table on
    each page). Safe for the same reasons as the token cache: a change made
    in this process empties it at once, elsewhere it lives at most the TTL.
    The session and the user row are still read per request, so logging out
    or deactivating a user takes effect at once."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        user = request.user
        ttl = getattr(settings, "ARBITER_TOKEN_CACHE_SECONDS", 0)
        if ttl <= 0 or not user.is_authenticated:
            return self.get_response(request)
        now = time.monotonic()
        hit = _roles_cache.get(user.pk)
        if hit is not None and hit[0] > now:
            user._arbiter_groups = set(hit[1])
            return self.get_response(request)
        response = self.get_response(request)
        groups = getattr(user, "_arbiter_groups", None)
        if groups is not None and getattr(request.user, "pk", None) == user.pk:
            _remember(_roles_cache, user.pk, (now + ttl, frozenset(groups)))
        return response


class CachedTokenAuthentication(TokenAuthentication):
    """``TokenAuthentication`` whose successful lookups (user and groups) are
    reused for ``ARBITER_TOKEN_CACHE_SECONDS`` in this process."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        ttl = getattr(settings, "ARBITER_TOKEN_CACHE_SECONDS", 0)
        now = time.monotonic()
        hit = _cache.get(key) if ttl > 0 else None
        if hit is not None and hit[0] > now:
            return copy.copy(hit[1]), hit[2]
        user, token = super().authenticate_credentials(key)
        if ttl > 0:
            roles.has_role(user, roles.ANNOTATOR)  # loads and keeps the groups
            _remember(_cache, key, (now + ttl, user, token))
            return copy.copy(user), token
        return user, token


@receiver(post_save, sender=Token)
@receiver(post_delete, sender=Token)
def _token_changed(sender: Any, instance: Token, **kwargs: Any) -> None:
    with _lock:
        _cache.pop(instance.key, None)


@receiver(post_save, sender=get_user_model())
@receiver(post_delete, sender=get_user_model())
@receiver(post_save, sender=Group)
@receiver(post_delete, sender=Group)
@receiver(m2m_changed, sender=get_user_model().groups.through)
def _people_changed(sender: Any, **kwargs: Any) -> None:
    token_cache_clear()


# ------------------------------------------------------------- session users

_USER_KEY = "core.auth.user:{}"


def _shared_cache() -> BaseCache | None:
    """The Redis cache every web process shares (``CACHES["shared"]``), if
    this deployment has one."""
    return caches["shared"] if "shared" in settings.CACHES else None


class CachedUserBackend(ModelBackend):
    """``ModelBackend`` whose ``get_user`` (the session's user, read on every
    page request) is served from the shared Redis cache, so a page request
    costs no SQL statement for it.

    Why this is safe:

    * Saving or deleting a user deletes its entry for every process, once
      at the save and once more when its transaction commits, so a request
      that read the old row in between cannot keep it. Logging in, a
      password change and a deactivation all save the user; logging out
      deletes the session itself (``core.sessions``).
    * An entry lives at most ``ARBITER_TOKEN_CACHE_SECONDS``: a change that
      bypasses ``save()`` (a queryset ``update()``) shows within that bound,
      the token cache's.
    * Django checks the session's password hash against the cached row as
      it does against the database's, and only active users are cached.
    * Without a shared cache, with the TTL at 0, or when Redis cannot be
      reached, the user is read from the database as before.
    """

    def get_user(self, user_id: Any) -> Any:
        cache = _shared_cache()
        ttl = getattr(settings, "ARBITER_TOKEN_CACHE_SECONDS", 0)
        if cache is None or ttl <= 0:
            return super().get_user(user_id)
        key = _USER_KEY.format(user_id)
        try:
            user = cache.get(key)
        except Exception:
            logger.warning("core.auth.user_cache_unreadable", exc_info=True)
            return super().get_user(user_id)
        if user is not None:
            return user
        user = super().get_user(user_id)
        if user is not None:
            try:
                cache.set(key, user, ttl)
            except Exception:
                logger.warning("core.auth.user_cache_unwritable", exc_info=True)
        return user


@receiver(post_save, sender=get_user_model())
@receiver(post_delete, sender=get_user_model())
def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    cache = _shared_cache()
    if cache is None:
        return
    key = _USER_KEY.format(instance.pk)
    _user_forget(cache, key)
    transaction.on_commit(lambda: _user_forget(cache, key))


def _user_forget(cache: BaseCache, key: str) -> None:
    """Delete a cached user. A Redis that cannot be reached is logged, not
    raised: an entry it still holds expires within the TTL, and failing the
    save (a login records its time) would turn an outage of the cache into
    an outage of logins."""
    try:
        cache.delete(key)
    except Exception:
        logger.warning("core.auth.user_cache_undeletable key=%s", key, exc_info=True)
