"""People and API tokens over the API: admins manage accounts; everyone
rotates their own token. A token's key appears only in the response that
issued it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import people
from core.permissions import IsAdmin
from core.roles import ROLES
from core.schema import ApiAutoSchema


@extend_schema_serializer(component_name="PeopleError")
class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the request was refused.")


@extend_schema_serializer(component_name="PersonValidationError")
class ValidationErrorSerializer(ErrorSerializer):
    """``detail`` plus the fields at fault, each with its messages."""

    username = serializers.ListField(child=serializers.CharField(), required=False)
    email = serializers.ListField(child=serializers.CharField(), required=False)
    role = serializers.ListField(child=serializers.CharField(), required=False)
    password = serializers.ListField(child=serializers.CharField(), required=False)
    is_active = serializers.ListField(child=serializers.CharField(), required=False)


def _error(description: str, serializer: Any = ErrorSerializer) -> OpenApiResponse:
    return OpenApiResponse(serializer, description=description)


NOT_LOGGED_IN = _error("No credentials (or invalid ones).")
NOT_ADMIN = _error("The user lacks the admin role.")
NO_SUCH_PERSON = _error("No person has this id.")


class PersonOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(help_text="An email address, or empty.")
    role = serializers.SerializerMethodField(
        help_text="annotator, reviewer or admin (superusers are admins); null "
        "for an account in no role group."
    )
    is_active = serializers.BooleanField(
        help_text="False once deactivated: no login, no token."
    )
    is_superuser = serializers.BooleanField()
    last_login = serializers.DateTimeField(allow_null=True)
    date_joined = serializers.DateTimeField()
    has_token = serializers.BooleanField(
        help_text="Whether an API token exists; its key is never listed."
    )

    def get_role(self, user: Any) -> str | None:
        return people.user_role(user=user)


class TokenOutputSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    token = serializers.CharField(
        help_text="The new API token, shown this once: send it as "
        "'Authorization: Token <token>'. Any previous token no longer works."
    )
    created = serializers.DateTimeField()


def _token_data(issued: people.IssuedToken) -> dict[str, Any]:
    return {"user_id": issued.user.pk, "token": issued.key, "created": issued.created}


class PersonCreatedSerializer(PersonOutputSerializer):
    token = serializers.CharField(
        help_text="The new user's API token, shown this once."
    )


class PersonListApi(APIView):
    """Accounts: list them, or create one with a role and an API token."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="PersonCreateInput")
    class InputSerializer(serializers.Serializer):
        # Django's username rule, stated in the schema.
        username = serializers.RegexField(
            r"^[\w.@+-]+$",
            max_length=150,
            help_text="Letters, digits and @ . + - _ only.",
        )
        email = serializers.EmailField(required=False, allow_blank=True, default="")
        role = serializers.ChoiceField(choices=ROLES)
        password = serializers.CharField(
            required=False,
            allow_blank=True,
            write_only=True,
            trim_whitespace=False,
            help_text=(
                "Optional. Without one the account gets an unusable password: "
                "it works through its API token only and cannot log in to the "
                "pages. A password must pass the site's password validators."
            ),
        )

    @extend_schema(
        responses={
            200: PersonOutputSerializer(many=True),
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
        }
    )
    def get(self, request: Request) -> Response:
        return Response(PersonOutputSerializer(people.person_list(), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: PersonCreatedSerializer,
            400: _error(
                "A field is invalid: the username is taken or malformed, the "
                "role unknown, the email malformed or the password too weak.",
                ValidationErrorSerializer,
            ),
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = people.user_create(**serializer.validated_data)
        person = people.person_get(user_id=issued.user.pk)
        data = {**PersonOutputSerializer(person).data, "token": issued.key}
        return Response(data, status=status.HTTP_201_CREATED)


class PersonDetailApi(APIView):
    """One account; PATCH changes its role, email or active flag. Accounts
    are never deleted (their labels stay): deactivate them instead."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema_serializer(component_name="PersonUpdateInput")
    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=ROLES, required=False)
        is_active = serializers.BooleanField(
            required=False,
            help_text="False deactivates the account and deletes its token; "
            "true reactivates it (issue a new token then).",
        )
        email = serializers.EmailField(required=False, allow_blank=True)

    @extend_schema(
        responses={
            200: PersonOutputSerializer,
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
            404: NO_SUCH_PERSON,
        }
    )
    def get(self, request: Request, user_id: int) -> Response:
        person = people.person_get(user_id=user_id)
        return Response(PersonOutputSerializer(person).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: PersonOutputSerializer,
            400: _error(
                "A field is invalid, or the change would demote or deactivate "
                "the admin making it, or lower a superuser's role.",
                ValidationErrorSerializer,
            ),
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
            404: NO_SUCH_PERSON,
        },
    )
    def patch(self, request: Request, user_id: int) -> Response:
        person = people.person_get(user_id=user_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        person = people.user_update(
            user=person, actor=request.user, **serializer.validated_data
        )
        return Response(PersonOutputSerializer(person).data)


class PersonTokenRotateApi(APIView):
    """Issue (or replace) a person's API token, shown once in the response.
    Their previous token stops working at once."""

    permission_classes = [IsAdmin]
    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={
            201: TokenOutputSerializer,
            400: _error("The account is deactivated; reactivate it first."),
            401: NOT_LOGGED_IN,
            403: NOT_ADMIN,
            404: NO_SUCH_PERSON,
        },
    )
    def post(self, request: Request, user_id: int) -> Response:
        issued = people.token_rotate(user=people.person_get(user_id=user_id))
        return Response(_token_data(issued), status=status.HTTP_201_CREATED)


class MeTokenRotateApi(APIView):
    """Replace the caller's own API token, shown once in the response. The
    token used for this very request stops working at once."""

    schema = ApiAutoSchema()

    @extend_schema(
        request=None,
        responses={201: TokenOutputSerializer, 401: NOT_LOGGED_IN},
    )
    def post(self, request: Request) -> Response:
        issued = people.token_rotate(user=request.user)
        return Response(_token_data(issued), status=status.HTTP_201_CREATED)
