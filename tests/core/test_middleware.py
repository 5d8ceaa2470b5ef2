"""core.unavailable: a database that fails under a request gives a 503 with
Retry-After (JSON for the API, a short page otherwise), with DEBUG on, and
the next request works again. Each fault here is real: the request's own
PostgreSQL connection is terminated by the server."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.roles import ANNOTATOR
from core.unavailable import RETRY_AFTER_SECONDS
from tests.conftest import _test_database_url


def _terminate_own_connection() -> None:
    """The server ends this connection, as a restart or shutdown would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


class FaultApi(APIView):
    def get(self, request: Request) -> Response:
        _terminate_own_connection()
        return Response({"never": True})


def fault_page(request: HttpRequest) -> HttpResponse:
    _terminate_own_connection()
    return HttpResponse("never")


def bug_page(request: HttpRequest) -> HttpResponse:
    raise ValueError("a bug, not the database")


urlpatterns = [
    path("api/v1/test-fault/", FaultApi.as_view()),
    path("test-fault/", fault_page),
    path("test-bug/", bug_page),
    path("", include("config.urls")),
]

pytestmark = [
    pytest.mark.urls(__name__),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def debug_on(settings: Any) -> None:
    settings.DEBUG = True


@pytest.fixture
def fresh_connection() -> Any:
    """Each test kills the shared test connection; start and end on a new one."""
    connection.close()
    yield
    connection.close()


def _assert_retry_after(response: Any) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_api_answers_503_json_when_the_database_drops_the_connection(
    debug_on: None, fresh_connection: None, make_user: Any, api_client_for: Any
) -> None:
    """The API's usual error body, a 503 and Retry-After, not a debug page;
    the next request gets through on a new connection."""
    client = api_client_for(make_user(ANNOTATOR))

    response = client.get("/api/v1/test-fault/")

    _assert_retry_after(response)
    assert response["Content-Type"].startswith("application/json")
    assert "try again in a few seconds" in response.json()["detail"].lower()
    connection.close()  # what the end of a real request does with a broken one
    assert client.get("/api/v1/me/").status_code == 200


def test_page_answers_503_try_again_page_when_the_database_drops_the_connection(
    debug_on: None, fresh_connection: None, make_user: Any
) -> None:
    """Pages get a short 'restarting, try again' page with Retry-After."""
    client = Client()
    client.force_login(make_user(ANNOTATOR))

    response = client.get("/test-fault/")

    _assert_retry_after(response)
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "The database is restarting — try again in a few seconds" in body
    assert "Traceback" not in body


def test_a_database_error_before_the_view_is_a_503_too(
    debug_on: None, fresh_connection: None, make_user: Any, api_client_for: Any
) -> None:
    """When the connection dies between requests, the first query (the
    session lookup in the login middleware, the token lookup of the API)
    fails before any view runs; that is a 503 as well, never a 500."""
    user = make_user(ANNOTATOR)
    page = Client(raise_request_exception=False)
    page.force_login(user)
    api = api_client_for(user)
    for client, url in ((page, "/"), (api, "/api/v1/me/")):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with psycopg.connect(_test_database_url(), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

        response = client.get(url)

        _assert_retry_after(response)
        connection.close()


def test_other_errors_are_not_disguised_as_unavailable(
    debug_on: None, make_user: Any
) -> None:
    """Only database unavailability is a 503: a bug still raises (a 500)."""
    client = Client()
    client.force_login(make_user(ANNOTATOR))
    with pytest.raises(ValueError, match="a bug"):
        client.get("/test-bug/")
