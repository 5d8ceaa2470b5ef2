from __future__ import annotations

from typing import Any

from django import forms

from labeling.models import Campaign
from labeling.services.queue import SCREEN_CHOICES

CHOICE_FIELD_CHOICES = [(c, c) for c in SCREEN_CHOICES]


class PreferenceForm(forms.Form):
    """The label form; also works as a plain POST without JavaScript."""

    intent = forms.ChoiceField(
        choices=[("label", "label"), ("skip", "skip")], required=False
    )
    choice = forms.ChoiceField(choices=CHOICE_FIELD_CHOICES, required=False)
    strength = forms.TypedChoiceField(
        choices=[("", "—")] + [(str(i), str(i)) for i in range(-3, 4)],
        coerce=int,
        empty_value=None,
        required=False,
    )
    rationale = forms.CharField(max_length=1000, required=False)
    time_spent_ms = forms.IntegerField(
        min_value=0, max_value=86_400_000, required=False
    )
    client_request_id = forms.CharField(max_length=64, required=False)

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.criteria_names = [c["name"] for c in campaign.criteria]
        for name in self.criteria_names:
            self.fields[f"criterion__{name}"] = forms.ChoiceField(
                choices=[("", "—"), *CHOICE_FIELD_CHOICES], required=False, label=name
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["intent"] = data.get("intent") or "label"
        if data["intent"] == "label" and not data.get("choice"):
            self.add_error("choice", "Pick left, right, tie or both bad.")
        return data

    def preference_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "choice": data["choice"],
            "strength": data.get("strength"),
            "criteria": {
                n: data[f"criterion__{n}"]
                for n in self.criteria_names
                if data.get(f"criterion__{n}")
            },
            "rationale": data.get("rationale") or "",
            "time_spent_ms": data.get("time_spent_ms"),
            "client_request_id": data.get("client_request_id") or "",
        }
