"""People API: admins create, list, change and issue tokens; everyone
rotates their own token. Tokens are checked with real requests carrying
``Authorization: Token ...``."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.roles import ADMIN, ANNOTATOR, REVIEWER

LIST = reverse("api-person-list")
ME = reverse("api-me")
ME_TOKEN = reverse("api-me-token")


def _detail(user_id: int) -> str:
    return reverse("api-person-detail", args=[user_id])


def _token_url(user_id: int) -> str:
    return reverse("api-person-token", args=[user_id])


def _who(key: str) -> tuple[int, str | None]:
    """Status of GET /api/v1/me/ with this token, and the username it gave."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.get(ME)
    return response.status_code, response.json().get("username")


@pytest.mark.django_db
def test_anonymous_gets_401_everywhere(make_user: Any) -> None:
    person = make_user(ANNOTATOR)
    client = APIClient()
    assert client.get(LIST).status_code == 401
    assert client.post(LIST, {"username": "x", "role": ANNOTATOR}).status_code == 401
    assert client.get(_detail(person.pk)).status_code == 401
    assert client.patch(_detail(person.pk), {"role": ADMIN}).status_code == 401
    assert client.post(_token_url(person.pk)).status_code == 401
    assert client.post(ME_TOKEN).status_code == 401
    assert not Token.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [ANNOTATOR, REVIEWER])
def test_annotators_and_reviewers_get_403_on_people(
    make_user: Any, api_client_for: Any, role: str
) -> None:
    user = make_user(role)
    other = make_user(ANNOTATOR)
    client = api_client_for(user)
    responses = [
        client.get(LIST),
        client.post(LIST, {"username": "sneaky", "role": ADMIN}),
        client.get(_detail(other.pk)),
        client.patch(_detail(user.pk), {"role": ADMIN}, format="json"),
        client.post(_token_url(other.pk)),
    ]
    assert [r.status_code for r in responses] == [403] * 5
    assert responses[0].json() == {"detail": "You need the admin role."}
    assert not get_user_model().objects.filter(username="sneaky").exists()
    assert not Token.objects.filter(user=other).exists()
    user.refresh_from_db()
    assert list(user.groups.values_list("name", flat=True)) == [role]


@pytest.mark.django_db
@pytest.mark.parametrize("role", [ANNOTATOR, REVIEWER, ADMIN])
def test_me_token_rotates_the_callers_token_and_the_old_one_stops_working(
    make_user: Any, api_client_for: Any, role: str
) -> None:
    user = make_user(role)
    client = api_client_for(user)
    old = Token.objects.get(user=user).key
    response = client.post(ME_TOKEN)
    assert response.status_code == 201
    new = response.json()["token"]
    assert response.json()["user_id"] == user.pk and new != old
    assert Token.objects.get(user=user).key == new
    assert _who(old)[0] == 401
    assert _who(new) == (200, user.username)


@pytest.mark.django_db
def test_admin_creates_a_token_only_account_and_the_token_is_shown_once(
    make_user: Any, api_client_for: Any
) -> None:
    client = api_client_for(make_user(ADMIN))
    response = client.post(
        LIST,
        {"username": "labeler", "role": REVIEWER, "email": "l@x.org"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    key = body.pop("token")
    assert body["username"] == "labeler" and body["role"] == REVIEWER
    assert body["has_token"] and body["is_active"] and body["last_login"] is None
    user = get_user_model().objects.get(username="labeler")
    assert not user.has_usable_password() and user.email == "l@x.org"
    assert _who(key) == (200, "labeler")
    later = [client.get(LIST), client.get(_detail(user.pk))]
    for again in later:
        assert again.status_code == 200
        assert key not in again.content.decode()
        assert b'"token"' not in again.content
    listed = {p["username"]: p for p in later[0].json()}
    assert listed["labeler"]["has_token"] is True


@pytest.mark.django_db
def test_create_errors_name_the_field(make_user: Any, api_client_for: Any) -> None:
    """Taken username, unknown role, weak password: 400 on that field, and
    no account made."""
    make_user(ANNOTATOR, username="taken")
    client = api_client_for(make_user(ADMIN))
    before = get_user_model().objects.count()
    taken = client.post(LIST, {"username": "taken", "role": ANNOTATOR}, format="json")
    assert taken.status_code == 400
    assert "already exists" in taken.json()["username"][0]
    role = client.post(LIST, {"username": "new", "role": "boss"}, format="json")
    assert role.status_code == 400 and "role" in role.json()
    weak = client.post(
        LIST,
        {"username": "new", "role": ANNOTATOR, "password": "password"},
        format="json",
    )
    assert weak.status_code == 400
    assert "too common" in " ".join(weak.json()["password"])
    assert get_user_model().objects.count() == before


@pytest.mark.django_db
def test_admin_creates_an_account_with_a_password_that_can_log_in(
    make_user: Any, api_client_for: Any
) -> None:
    client = api_client_for(make_user(ADMIN))
    response = client.post(
        LIST,
        {"username": "human", "role": ANNOTATOR, "password": "quiet-meadow-river-41"},
        format="json",
    )
    assert response.status_code == 201 and "password" not in response.json()
    assert APIClient().login(username="human", password="quiet-meadow-river-41")


@pytest.mark.django_db
def test_admin_changes_a_role_and_cannot_demote_or_deactivate_themselves(
    make_user: Any, api_client_for: Any
) -> None:
    admin = make_user(ADMIN)
    person = make_user(ANNOTATOR)
    client = api_client_for(admin)
    promoted = client.patch(_detail(person.pk), {"role": REVIEWER}, format="json")
    assert promoted.status_code == 200 and promoted.json()["role"] == REVIEWER
    person.refresh_from_db()
    assert list(person.groups.values_list("name", flat=True)) == [REVIEWER]
    demote = client.patch(_detail(admin.pk), {"role": ANNOTATOR}, format="json")
    assert demote.status_code == 400
    assert "own admin role" in demote.json()["detail"]
    assert "role" in demote.json()
    deactivate = client.patch(_detail(admin.pk), {"is_active": False}, format="json")
    assert deactivate.status_code == 400 and "is_active" in deactivate.json()
    admin.refresh_from_db()
    assert admin.is_active and admin.groups.filter(name=ADMIN).exists()
    unknown = client.patch(_detail(person.pk), {"role": "boss"}, format="json")
    assert unknown.status_code == 400 and "role" in unknown.json()


@pytest.mark.django_db
def test_a_deactivated_users_token_no_longer_authenticates(
    make_user: Any, api_client_for: Any
) -> None:
    admin_client = api_client_for(make_user(ADMIN))
    person = make_user(ANNOTATOR)
    key = Token.objects.get_or_create(user=person)[0].key
    assert _who(key) == (200, person.username)
    response = admin_client.patch(
        _detail(person.pk), {"is_active": False}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert response.json()["has_token"] is False
    assert _who(key)[0] == 401
    refused = admin_client.post(_token_url(person.pk))
    assert refused.status_code == 400 and "reactivate" in refused.json()["detail"]
    back = admin_client.patch(_detail(person.pk), {"is_active": True}, format="json")
    assert back.status_code == 200 and back.json()["is_active"] is True
    assert _who(key)[0] == 401
    person.refresh_from_db()
    assert person.is_active


@pytest.mark.django_db
def test_admin_issues_and_rotates_a_persons_token(
    make_user: Any, api_client_for: Any
) -> None:
    client = api_client_for(make_user(ADMIN))
    person = make_user(REVIEWER)
    first = client.post(_token_url(person.pk))
    assert first.status_code == 201
    assert _who(first.json()["token"]) == (200, person.username)
    second = client.post(_token_url(person.pk))
    assert second.status_code == 201
    assert _who(first.json()["token"])[0] == 401
    assert _who(second.json()["token"]) == (200, person.username)
    assert second.json()["token"] not in client.get(_detail(person.pk)).content.decode()


@pytest.mark.django_db
def test_unknown_person_ids_answer_404(make_user: Any, api_client_for: Any) -> None:
    client = api_client_for(make_user(ADMIN))
    assert client.get(_detail(999_999)).status_code == 404
    assert client.patch(_detail(999_999), {"role": ADMIN}).status_code == 404
    assert client.post(_token_url(999_999)).status_code == 404
    assert client.get(_detail(999_999)).json() == {"detail": "No person has this id."}
