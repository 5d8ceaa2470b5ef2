"""Session users read from Redis (``core.auth.CachedUserBackend``) and
sessions kept in PostgreSQL and read from Redis (``core.sessions``): a page
costs no SQL statement for either, and every change that must log someone
out still does so at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.auth import _USER_KEY
from core.people import user_update
from core.roles import ADMIN
from tests.conftest import PASSWORD

pytestmark = pytest.mark.skipif(
    "shared" not in settings.CACHES, reason="needs the shared Redis cache"
)


def _logged_in(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _page(client: Client) -> Any:
    return client.get(reverse("labeling:campaign-list"))


@pytest.mark.django_db
def test_a_page_reads_neither_the_session_nor_the_user_from_the_database(
    annotator: Any,
) -> None:
    client = _logged_in(annotator)
    assert _page(client).status_code == 200  # the user is cached here
    with CaptureQueriesContext(connection) as queries:
        assert _page(client).status_code == 200
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "django_session" not in tables and "auth_user" not in tables
    assert caches["shared"].get(_USER_KEY.format(annotator.pk)) is not None


@pytest.mark.django_db
def test_deactivating_a_cached_user_logs_them_out_at_once(
    annotator: Any, make_user: Any
) -> None:
    client = _logged_in(annotator)
    assert _page(client).status_code == 200
    user_update(user=annotator, actor=make_user(ADMIN), is_active=False)
    assert _page(client).status_code == 302


@pytest.mark.django_db
def test_a_new_password_logs_out_the_other_sessions_at_once(annotator: Any) -> None:
    elsewhere = _logged_in(annotator)
    assert _page(elsewhere).status_code == 200
    user = get_user_model().objects.get(pk=annotator.pk)
    user.set_password("another-horse-battery-staple")
    user.save()
    assert _page(elsewhere).status_code == 302


@pytest.mark.django_db
def test_logging_out_ends_the_cached_session_for_every_copy_of_its_cookie(
    annotator: Any,
) -> None:
    client = _logged_in(annotator)
    stolen = Client()
    stolen.cookies = client.cookies.__class__(client.cookies)
    assert _page(stolen).status_code == 200
    client.post(reverse("logout"))
    assert _page(stolen).status_code == 302


@pytest.mark.django_db
def test_pages_work_from_the_database_when_redis_cannot_be_reached(
    annotator: Any, settings: Any, tmp_path: Any
) -> None:
    """A logged-in user keeps working through an outage of Redis (logging
    in or out then fails: a logout must not leave a cached session)."""
    client = _logged_in(annotator)
    assert _page(client).status_code == 200
    shared = dict(settings.CACHES["shared"])
    shared["LOCATION"] = f"unix://{tmp_path}/no-redis.sock"
    settings.CACHES = {**settings.CACHES, "shared": shared}
    with CaptureQueriesContext(connection) as queries:
        assert _page(client).status_code == 200
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "django_session" in tables and "auth_user" in tables
