from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat

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

    def __init__(
        self, *args: Any, campaign: Campaign | None = None, **kwargs: Any
    ) -> None:
        """With ``campaign``, a field per criterion of the campaign (the card);
        without it (a submit), a field per ``criterion__<name>`` posted: the
        service refuses a name the lease's campaign does not have, so the
        submit need not read the campaign first."""
        super().__init__(*args, **kwargs)
        if campaign is not None:
            self.criteria_names = [c["name"] for c in campaign.criteria]
        else:
            posted = self.data.keys() if self.is_bound else []
            self.criteria_names = [
                key.removeprefix("criterion__")
                for key in posted
                if key.startswith("criterion__")
            ]
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


CRITERIA_EXAMPLE = '[{"name": "helpfulness", "description": "Answers the question"}]'


class CampaignForm(forms.Form):
    """Create and edit a campaign. Shapes and limits are checked by the
    services (the API uses the same ones); this form only parses text."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(
        max_length=500, required=False, help_text="One line shown in lists."
    )
    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12}),
        required=False,
        max_length=100_000,
        help_text="What annotators read beside every pair; Markdown.",
    )
    criteria = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        required=False,
        max_length=20_000,
        help_text=f"Optional criteria judged separately, as a JSON list: {CRITERIA_EXAMPLE}",
    )
    status = forms.ChoiceField(choices=Campaign.Status.choices)
    field_order = ["name", "mode"]
    # Not required: a form posted without it (an older page, a script)
    # creates a pair campaign and leaves an existing campaign's mode alone.
    mode = forms.ChoiceField(
        choices=Campaign.Mode.choices,
        required=False,
        initial=Campaign.Mode.PAIR,
        help_text="Pair: annotators pick the better of two answers. Rank: they "
        "order 3 to 9 answers of a prompt, best first. Fixed once the campaign "
        "has comparisons.",
    )

    @classmethod
    def initial_for(cls, campaign: Campaign) -> dict[str, Any]:
        return {
            "mode": campaign.mode,
            "name": campaign.name,
            "description": campaign.description,
            "guidelines": campaign.guidelines,
            "criteria": json.dumps(campaign.criteria, indent=2, ensure_ascii=False)
            if campaign.criteria
            else "",
            "status": campaign.status,
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("mode"):
            data.pop("mode", None)
        return data

    def clean_criteria(self) -> list[Any]:
        raw = self.cleaned_data["criteria"].strip()
        if not raw:
            return []
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"Not valid JSON ({exc.msg} at line {exc.lineno}, column "
                f"{exc.colno}). Expected a list like {CRITERIA_EXAMPLE}."
            ) from None
        except RecursionError:
            raise ValidationError("Nested too deeply.") from None
        if not isinstance(value, list):
            raise ValidationError(f"Expected a JSON list like {CRITERIA_EXAMPLE}.")
        return value


class CampaignImportForm(forms.Form):
    file = forms.FileField(
        label="JSONL file",
        help_text="UTF-8, one JSON object per line; a byte-order mark is fine.",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".jsonl,.json,.ndjson,.txt,application/jsonl"}
        ),
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.ARBITER_IMPORT_MAX_BYTES
        if upload.size > limit:
            raise ValidationError(
                f"The file is {filesizeformat(upload.size)}; the limit is "
                f"{filesizeformat(limit)}. Split it into smaller files."
            )
        return upload


def competition_ranks(places: list[int]) -> list[int]:
    """Places as posted (any numbers, best lowest, equal = tied) as ranks
    1..K aligned with them: a tie shares the better rank and the next answer
    takes its own position (``[3, 1, 3, 7]`` -> ``[2, 1, 2, 4]``)."""
    ordered = sorted(places)
    return [ordered.index(p) + 1 for p in places]


class RankingForm(forms.Form):
    """The ranking card's form: a place for each shown answer (``rank_0`` ..
    ``rank_<K-1>``, aligned with the order shown), as rank.js keeps them or
    as chosen by hand without JavaScript."""

    intent = forms.ChoiceField(
        choices=[("rank", "rank"), ("skip", "skip")], required=False
    )
    none_acceptable = forms.BooleanField(required=False)
    reason = forms.CharField(max_length=1000, required=False, strip=True)
    time_spent_ms = forms.IntegerField(
        min_value=0, max_value=86_400_000, required=False
    )
    client_request_id = forms.CharField(max_length=64, required=False)

    def __init__(self, *args: Any, k: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k = k
        places = [(str(n), str(n)) for n in range(1, k + 1)]
        for i in range(k):
            self.fields[f"rank_{i}"] = forms.TypedChoiceField(
                choices=places,
                coerce=int,
                empty_value=None,
                required=False,
                label=f"Place {i + 1}",
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["intent"] = data.get("intent") or "rank"
        if data["intent"] == "rank" and any(
            data.get(f"rank_{i}") is None for i in range(self.k)
        ):
            raise ValidationError(f"Give every answer a place from 1 to {self.k}.")
        return data

    def ranking_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "ranks": competition_ranks([data[f"rank_{i}"] for i in range(self.k)]),
            "none_acceptable": data.get("none_acceptable") or False,
            "reason": data.get("reason") or "",
            "time_spent_ms": data.get("time_spent_ms"),
            "client_request_id": data.get("client_request_id") or "",
        }

    def posted_answer(self) -> dict[str, Any]:
        """What was posted, to show again when the submit is refused: the
        places when every one is a valid number, else the order shown."""
        raw = [self.data.get(f"rank_{i}", "") for i in range(self.k)]
        ranks = (
            [int(r) for r in raw]
            if all(r.isdigit() and 1 <= int(r) <= self.k for r in raw)
            else None
        )
        return {
            "ranks": ranks,
            "none_acceptable": bool(self.data.get("none_acceptable")),
            "reason": self.data.get("reason", "")[:1000],
        }

    def error_text(self) -> str:
        return "; ".join(
            " ".join(errors) if name == "__all__" else f"{name}: {' '.join(errors)}"
            for name, errors in self.errors.items()
        )
