"""People and profile pages: who may see them, the token shown once on the
response that issued it, form errors on their field, self-demotion refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.roles import ADMIN, ANNOTATOR, REVIEWER

PEOPLE = reverse("core:people")
PROFILE = reverse("core:profile")
PROFILE_TOKEN = reverse("core:profile-token")


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _authenticates(key: str) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(reverse("api-me")).status_code == 200


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page(make_user: Any) -> None:
    person = make_user(ANNOTATOR)
    client = Client()
    for url in (PEOPLE, PROFILE):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    for url in (
        PROFILE_TOKEN,
        reverse("core:person-token", args=[person.pk]),
        reverse("core:person-update", args=[person.pk]),
    ):
        assert client.post(url, {"is_active": "0"}).status_code == 302
    assert not Token.objects.exists()
    person.refresh_from_db()
    assert person.is_active


@pytest.mark.django_db
@pytest.mark.parametrize("role", [ANNOTATOR, REVIEWER])
def test_annotators_and_reviewers_get_403_on_people_but_use_their_profile(
    make_user: Any, role: str
) -> None:
    user = make_user(role)
    other = make_user(ANNOTATOR)
    client = _client(user)
    assert client.get(PEOPLE).status_code == 403
    refused = [
        client.post(PEOPLE, {"username": "sneaky", "role": ADMIN}),
        client.post(reverse("core:person-update", args=[user.pk]), {"role": ADMIN}),
        client.post(reverse("core:person-token", args=[other.pk])),
    ]
    assert [r.status_code for r in refused] == [403] * 3
    assert not get_user_model().objects.filter(username="sneaky").exists()
    assert not Token.objects.filter(user=other).exists()
    assert not user.groups.filter(name=ADMIN).exists()
    profile = client.get(PROFILE)
    assert profile.status_code == 200
    assert role in profile.content.decode()
    assert b"Create my API token" in profile.content


@pytest.mark.django_db
def test_profile_token_is_shown_once_and_rotating_asks_first(make_user: Any) -> None:
    """Create: the key is on that response only (no-store). Afterwards the
    page offers a rotation behind a confirmation; rotating kills the old key."""
    user = make_user(ANNOTATOR)
    client = _client(user)
    created = client.post(PROFILE_TOKEN)
    assert created.status_code == 200
    key = Token.objects.get(user=user).key
    assert key in created.content.decode()
    assert "no-store" in created["Cache-Control"]
    assert _authenticates(key)
    later = client.get(PROFILE)
    assert key not in later.content.decode()
    assert b'<details class="card confirm">' in later.content
    assert b"stops working at once" in later.content
    rotated = client.post(PROFILE_TOKEN)
    new_key = Token.objects.get(user=user).key
    assert new_key != key and new_key in rotated.content.decode()
    assert not _authenticates(key) and _authenticates(new_key)
    assert client.get(PROFILE_TOKEN).status_code == 405


@pytest.mark.django_db
def test_admin_creates_an_account_and_sees_its_token_once(make_user: Any) -> None:
    admin = make_user(ADMIN)
    client = _client(admin)
    page = client.get(PEOPLE)
    assert page.status_code == 200 and admin.username in page.content.decode()
    assert b"unusable password" in page.content
    created = client.post(
        PEOPLE, {"username": "newbie", "email": "", "role": REVIEWER, "password": ""}
    )
    assert created.status_code == 200
    user = get_user_model().objects.get(username="newbie")
    key = Token.objects.get(user=user).key
    assert key in created.content.decode()
    assert "no-store" in created["Cache-Control"]
    assert not user.has_usable_password()
    assert user.groups.filter(name=REVIEWER).exists()
    assert _authenticates(key)
    again = client.get(PEOPLE)
    assert "newbie" in again.content.decode()
    assert key not in again.content.decode()


@pytest.mark.django_db
def test_create_form_errors_show_on_their_field(make_user: Any) -> None:
    make_user(ANNOTATOR, username="taken")
    client = _client(make_user(ADMIN))
    before = get_user_model().objects.count()
    taken = client.post(PEOPLE, {"username": "taken", "role": ANNOTATOR})
    assert taken.status_code == 400
    assert taken.context["form"].errors["username"] == [
        "A user with that username already exists."
    ]
    weak = client.post(
        PEOPLE, {"username": "fresh", "role": ANNOTATOR, "password": "abc"}
    )
    assert weak.status_code == 400
    assert "too short" in " ".join(weak.context["form"].errors["password"])
    assert b"too short" in weak.content
    bad_role = client.post(PEOPLE, {"username": "fresh", "role": "boss"})
    assert bad_role.status_code == 400 and "role" in bad_role.context["form"].errors
    assert get_user_model().objects.count() == before


@pytest.mark.django_db
def test_admin_changes_roles_deactivates_and_issues_tokens_from_the_page(
    make_user: Any,
) -> None:
    admin = make_user(ADMIN)
    person = make_user(ANNOTATOR)
    old_key = Token.objects.create(user=person).key
    client = _client(admin)
    update = reverse("core:person-update", args=[person.pk])
    promoted = client.post(update, {"role": REVIEWER}, follow=True)
    assert promoted.status_code == 200
    assert f"{person.username}: reviewer, active." in promoted.content.decode()
    assert list(person.groups.values_list("name", flat=True)) == [REVIEWER]
    issued = client.post(reverse("core:person-token", args=[person.pk]))
    new_key = Token.objects.get(user=person).key
    assert new_key != old_key and new_key in issued.content.decode()
    assert not _authenticates(old_key) and _authenticates(new_key)
    client.post(update, {"is_active": "0"})
    person.refresh_from_db()
    assert not person.is_active
    assert not _authenticates(new_key)
    assert b"deactivated" in client.get(reverse("core:people")).content
    client.post(update, {"is_active": "1"})
    person.refresh_from_db()
    assert person.is_active and not Token.objects.filter(user=person).exists()


@pytest.mark.django_db
def test_an_admin_cannot_demote_or_deactivate_themselves_on_the_page(
    make_user: Any,
) -> None:
    admin = make_user(ADMIN)
    client = _client(admin)
    update = reverse("core:person-update", args=[admin.pk])
    demoted = client.post(update, {"role": ANNOTATOR})
    assert demoted.status_code == 400
    assert "cannot remove your own admin role" in demoted.content.decode()
    deactivated = client.post(update, {"is_active": "0"})
    assert deactivated.status_code == 400
    assert "cannot deactivate yourself" in deactivated.content.decode()
    admin.refresh_from_db()
    assert admin.is_active and admin.groups.filter(name=ADMIN).exists()
    assert client.get(PROFILE).status_code == 200


@pytest.mark.django_db
def test_unknown_person_answers_404(make_user: Any) -> None:
    client = _client(make_user(ADMIN))
    response = client.post(reverse("core:person-token", args=[999_999]))
    assert response.status_code == 404
    assert not Token.objects.exists()
