from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.people import PersonError
from core.roles import ROLES

ROLE_CHOICES = [(role, role) for role in ROLES]


def form_add_service_error(
    form: forms.Form, exc: ValidationError | PersonError
) -> None:
    """Show a service's refusal on the form: next to the field it names when
    the form has that field, else above the form."""
    if isinstance(exc, PersonError):
        field = exc.field if exc.field in form.fields else None
        form.add_error(field, exc.message)
        return
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return
    form.add_error(None, exc)


class PersonCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=ROLES[0])
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Optional. Leave it empty for an API-token-only account: it "
        "gets an unusable password and cannot log in to the pages. A password "
        "must pass the site's password rules.",
    )


class PersonUpdateForm(forms.Form):
    """One change at a time from the people table: a new role, or
    ``is_active`` "1"/"0" to reactivate/deactivate."""

    role = forms.ChoiceField(choices=ROLE_CHOICES, required=False)
    is_active = forms.TypedChoiceField(
        choices=[("1", "active"), ("0", "deactivated")],
        coerce=lambda value: value == "1",
        required=False,
        empty_value=None,
    )

    def changes(self) -> dict[str, Any]:
        return {
            key: value
            for key, value in self.cleaned_data.items()
            if value not in (None, "")
        }
