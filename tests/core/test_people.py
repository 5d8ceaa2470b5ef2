"""People services and selectors: accounts with a role and a token, role
changes, deactivation, token rotation, and the rules that keep an admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from core import people
from core.exceptions import NotFound
from core.people import PersonError
from core.roles import ADMIN, ANNOTATOR, REVIEWER, is_admin, is_reviewer


@pytest.mark.django_db
def test_user_create_without_password_gives_a_token_only_account(
    make_user: Any,
) -> None:
    """No password: an unusable one, the role's group, and a token whose key
    is the one returned."""
    issued = people.user_create(username="bot", role=REVIEWER, email="b@x.org")
    user = get_user_model().objects.get(username="bot")
    assert not user.has_usable_password()
    assert user.is_active and not user.is_staff
    assert list(user.groups.values_list("name", flat=True)) == [REVIEWER]
    assert Token.objects.get(user=user).key == issued.key
    assert is_reviewer(user) and not is_admin(user)


@pytest.mark.django_db
def test_user_create_with_a_password_runs_the_password_validators(
    make_user: Any,
) -> None:
    """A weak password is refused on the password field; nothing is made.
    A good one can log in."""
    with pytest.raises(ValidationError) as refused:
        people.user_create(username="weak", role=ANNOTATOR, password="123")
    assert "password" in refused.value.message_dict
    assert "too short" in " ".join(refused.value.message_dict["password"])
    assert not get_user_model().objects.filter(username="weak").exists()
    people.user_create(
        username="strong", role=ADMIN, password="violet-harbor-lantern-97"
    )
    user = get_user_model().objects.get(username="strong")
    assert user.check_password("violet-harbor-lantern-97") and user.is_staff


@pytest.mark.django_db
def test_user_create_refuses_a_taken_username_and_an_unknown_role(
    make_user: Any,
) -> None:
    make_user(ANNOTATOR, username="ada")
    with pytest.raises(ValidationError) as taken:
        people.user_create(username="ada", role=ANNOTATOR)
    assert "already exists" in taken.value.message_dict["username"][0]
    with pytest.raises(PersonError, match="Unknown role 'boss'") as unknown:
        people.user_create(username="bob", role="boss")
    assert unknown.value.field == "role"
    assert not get_user_model().objects.filter(username="bob").exists()


@pytest.mark.django_db
def test_user_update_moves_a_user_to_exactly_one_role_group(make_user: Any) -> None:
    actor = make_user(ADMIN)
    person = make_user(ANNOTATOR)
    updated = people.user_update(user=person, actor=actor, role=ADMIN)
    assert people.user_role(user=updated) == ADMIN and updated.is_staff
    updated = people.user_update(user=person, actor=actor, role=REVIEWER)
    person.refresh_from_db()
    assert list(person.groups.values_list("name", flat=True)) == [REVIEWER]
    assert not person.is_staff and people.user_role(user=updated) == REVIEWER


@pytest.mark.django_db
def test_an_admin_can_neither_demote_nor_deactivate_themselves(
    make_user: Any,
) -> None:
    admin = make_user(ADMIN)
    with pytest.raises(PersonError, match="own admin role") as demoted:
        people.user_update(user=admin, actor=admin, role=REVIEWER)
    assert demoted.value.field == "role"
    with pytest.raises(PersonError, match="cannot deactivate yourself"):
        people.user_update(user=admin, actor=admin, is_active=False)
    admin.refresh_from_db()
    assert admin.is_active and people.user_role(user=admin) == ADMIN
    people.user_update(user=admin, actor=admin, role=ADMIN, email="me@x.org")
    admin.refresh_from_db()
    assert admin.email == "me@x.org"


@pytest.mark.django_db
def test_a_superusers_role_cannot_be_lowered(make_user: Any) -> None:
    actor = make_user(ADMIN)
    root = get_user_model().objects.create_superuser("root", password="x")
    assert people.user_role(user=root) == ADMIN
    with pytest.raises(PersonError, match="superuser"):
        people.user_update(user=root, actor=actor, role=ANNOTATOR)


@pytest.mark.django_db
def test_deactivating_revokes_the_token_and_reactivating_does_not_restore_it(
    make_user: Any,
) -> None:
    actor = make_user(ADMIN)
    issued = people.user_create(username="temp", role=ANNOTATOR)
    people.user_update(user=issued.user, actor=actor, is_active=False)
    assert not Token.objects.filter(user=issued.user).exists()
    with pytest.raises(PersonError, match="deactivated"):
        people.token_rotate(user=issued.user)
    people.user_update(user=issued.user, actor=actor, is_active=True)
    assert not Token.objects.filter(user=issued.user).exists()
    assert people.token_rotate(user=issued.user).key != issued.key


@pytest.mark.django_db
def test_token_rotate_replaces_the_users_one_token(make_user: Any) -> None:
    user = make_user(ANNOTATOR)
    assert people.token_created_at(user=user) is None
    first = people.token_rotate(user=user)
    second = people.token_rotate(user=user)
    assert first.key != second.key
    assert list(Token.objects.filter(user=user).values_list("key", flat=True)) == [
        second.key
    ]
    assert people.token_created_at(user=user) == second.created


@pytest.mark.django_db
def test_person_list_gives_role_and_token_flag_in_two_queries(
    make_user: Any, django_assert_num_queries: Any
) -> None:
    """One query for the users with ``has_token``, one for their groups,
    however many people there are."""
    for role in (ANNOTATOR, REVIEWER, ADMIN, ANNOTATOR):
        make_user(role)
    people.token_rotate(user=make_user(REVIEWER, username="tokened"))
    get_user_model().objects.create_user("norole", password="x")
    with django_assert_num_queries(2):
        rows = {
            u.username: (people.user_role(user=u), u.has_token)
            for u in people.person_list()
        }
    assert rows["tokened"] == (REVIEWER, True)
    assert rows["norole"] == (None, False)
    assert rows["admin3"] == (ADMIN, False)
    assert len(rows) == 6


@pytest.mark.django_db
def test_person_get_raises_not_found_for_an_unknown_id(make_user: Any) -> None:
    with pytest.raises(NotFound, match="No person"):
        people.person_get(user_id=987654)
