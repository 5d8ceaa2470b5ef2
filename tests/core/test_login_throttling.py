"""Login throttling (core.login_throttling, django-axes): failed logins are
counted per account from one address and per address, a locked-out client
sees the login page say so and when to retry, the admin lists the attempts,
and token API calls are never throttled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"
HOME = "/"


def _login(client: Client, username: str, password: str) -> Any:
    return client.post(LOGIN, {"username": username, "password": password})


def _fail(client: Client, username: str, times: int) -> list[int]:
    return [
        _login(client, username, "not-the-password").status_code for _ in range(times)
    ]


@pytest.fixture
def person(make_user: Any) -> Any:
    return make_user(ANNOTATOR, username="ada")


def test_the_limit_th_failure_locks_the_account_and_the_page_says_when_to_retry(
    person: Any,
) -> None:
    """Below the limit a wrong password is the usual form error; the failure
    that reaches the limit answers 429 with the login page, a notice that
    names the retry time and a Retry-After header."""
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    statuses = _fail(client, person.username, limit)
    assert statuses == [200] * (limit - 1) + [429]

    response = _login(client, person.username, PASSWORD)
    assert response.status_code == 429
    body = response.content.decode()
    assert "this account is locked from your address" in body
    assert "Try again after" in body
    assert 'name="password"' in body, "the lockout is the login page, not a bare error"
    minutes = settings.AXES_COOLOFF_TIME.total_seconds() / 60
    assert 0 < int(response["Retry-After"]) <= minutes * 60
    assert "_auth_user_id" not in client.session, "a locked account was logged in"


def test_a_correct_password_below_the_limit_still_logs_in(person: Any) -> None:
    """Failures below the limit do not stand in the way of the right password."""
    client = Client()
    assert _fail(client, person.username, settings.AXES_FAILURE_LIMIT - 1)
    response = _login(client, person.username, PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(person.pk)


def test_a_lockout_is_per_account_and_address(person: Any, make_user: Any) -> None:
    """The locked account may still log in from another address, and another
    account may still log in from the locked address."""
    other = make_user(ANNOTATOR, username="grace")
    _fail(Client(), person.username, settings.AXES_FAILURE_LIMIT)

    elsewhere = Client(REMOTE_ADDR="10.1.2.3")
    assert _login(elsewhere, person.username, PASSWORD).status_code == 302

    same_address = Client()
    assert _login(same_address, other.username, PASSWORD).status_code == 302
    assert same_address.session["_auth_user_id"] == str(other.pk)


def test_many_failures_from_one_address_lock_every_account_from_it(
    person: Any, settings: Any
) -> None:
    """Guessing over many usernames from one address hits the per-address
    limit, which then refuses even a correct login from that address."""
    settings.ARBITER_LOGIN_ADDRESS_FAILURE_LIMIT = 6
    client = Client(REMOTE_ADDR="10.9.9.9")
    for i in range(6):
        _login(client, f"guess{i}", "not-the-password")
    assert AccessAttempt.objects.filter(ip_address="10.9.9.9").count() == 6

    response = _login(client, person.username, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert _login(Client(), person.username, PASSWORD).status_code == 302


def test_the_lockout_ends_after_the_cool_off(person: Any) -> None:
    """Once the last failure is older than the cool-off, the right password
    works again."""
    client = Client()
    _fail(client, person.username, settings.AXES_FAILURE_LIMIT)
    assert _login(client, person.username, PASSWORD).status_code == 429

    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert _login(client, person.username, PASSWORD).status_code == 302


def test_token_api_calls_are_not_throttled(person: Any, api_client_for: Any) -> None:
    """A locked-out account's API token keeps working: token auth never
    goes through the login throttle."""
    _fail(Client(), person.username, settings.AXES_FAILURE_LIMIT)
    assert _login(Client(), person.username, PASSWORD).status_code == 429

    response = api_client_for(person).get("/api/v1/campaigns/")
    assert response.status_code == 200


def test_the_admin_lists_failed_attempts_and_can_unlock(
    person: Any, make_user: Any
) -> None:
    """The admin shows each locked client with its failure count; deleting
    the attempt unlocks the account."""
    _fail(Client(), person.username, settings.AXES_FAILURE_LIMIT)
    admin = make_user(ADMIN)
    admin.is_staff = True
    admin.is_superuser = True
    admin.save(update_fields=["is_staff", "is_superuser"])
    staff = Client()
    staff.force_login(admin)

    page = staff.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert person.username in page.content.decode()

    attempt = AccessAttempt.objects.get(username=person.username)
    assert attempt.failures_since_start == settings.AXES_FAILURE_LIMIT
    staff.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert not AccessAttempt.objects.filter(username=person.username).exists()
    assert _login(Client(), person.username, PASSWORD).status_code == 302


def test_the_admin_login_is_throttled_too(person: Any) -> None:
    """The admin's own login form counts against the same limit."""
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": person.username, "password": "nope"})
    assert _login(client, person.username, PASSWORD).status_code == 429
