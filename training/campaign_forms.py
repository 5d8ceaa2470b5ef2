"""The campaign settings page: one form per section, one submit.

The forms only parse what the browser sends (numbers, checkboxes, JSON);
``campaign_settings_update`` judges the values, the same check as the API,
and its errors are put back next to their fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.forms.models import fields_for_model

from labeling.models import Campaign
from labeling.selectors import TIE_POLICIES
from models_hub.models import BaseModelVersion, GenerationSettings
from training.models import TrainingPolicy
from training.services.campaign_settings import (
    CAMPAIGN,
    CAMPAIGN_FIELDS,
    GENERATION,
    GENERATION_FIELDS,
    GENERATION_GROUPS,
    GENERATION_LIMITS,
    TRAINING,
    TRAINING_FIELDS,
    CampaignSettings,
)

# Shown instead of a model default that reads badly on the page.
DEFAULT_TEXT = {
    "annotators": "empty (every annotator)",
    "base_model": "empty (the default base model)",
    "config_overrides": "{} (each method's own defaults)",
}
# Labels and help for the fields whose model gives none or a terse one.
LABELS = {
    "overlap_k": "Labels per pair (k)",
    "lease_ttl_seconds": "Lease time (seconds)",
    "label_edit_minutes": "Minutes to change a label",
    "min_interval_minutes": "Minutes between rounds",
    "max_nll_increase": "Max NLL increase",
    "top_p": "Top-p",
}
HELP = {
    "pipeline": "What a scheduled round trains.",
    "tie_policy": "Ties in the snapshot: skip them, or train on both orders.",
    "max_new_tokens": "Longest completion, in tokens.",
    "temperature": "Sampling temperature of every generation round.",
    "top_p": "Nucleus sampling: draw from the most likely tokens whose "
    "probabilities add up to this.",
    "seed": "Sampling seed; each bootstrap sample and round offsets it.",
}


class _SectionForm(forms.Form):
    section: str
    model: type[models.Model]
    field_names: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The ``CampaignSettings`` attribute that holds this section's row.
    row_attribute: str

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        settings: CampaignSettings,
        read_only: bool,
    ) -> None:
        row = getattr(settings, self.row_attribute)
        initial = self.initial_extra(settings)
        values = forms.models.model_to_dict(row, fields=self.field_names)
        super().__init__(data, prefix=self.section, initial={**values, **initial})
        self.fields.update(fields_for_model(self.model, fields=self.field_names))
        for name, field in self.fields.items():
            field.label = LABELS.get(name, field.label)
            field.help_text = HELP.get(name, field.help_text)
            field.widget.attrs.update(self.bounds(name))
        self.customize()
        for name, field in self.fields.items():
            field.default_text = self.default_text(name)  # type: ignore[attr-defined]
            field.disabled = read_only

    def customize(self) -> None:
        """Adjust the generated fields (subclasses)."""

    def bounds(self, name: str) -> dict[str, float]:
        """The model's min/max validators as HTML attributes, so the browser
        flags an out-of-range number before it is sent."""
        attrs: dict[str, float] = {}
        for validator in getattr(self.model._meta.get_field(name), "validators", []):
            if isinstance(validator, MinValueValidator):
                attrs["min"] = validator.limit_value  # type: ignore[assignment]
            elif isinstance(validator, MaxValueValidator):
                attrs["max"] = validator.limit_value  # type: ignore[assignment]
        return attrs

    def default_text(self, name: str) -> str:
        if name in DEFAULT_TEXT:
            return DEFAULT_TEXT[name]
        default = self.model._meta.get_field(name).get_default()
        if isinstance(default, bool):
            return "on" if default else "off"
        return str(default)

    def fieldsets(self) -> Iterator[tuple[str, list[forms.BoundField]]]:
        groups = self.groups or (("", tuple(self.fields)),)
        for title, names in groups:
            yield title, [self[name] for name in names]

    def changes(self) -> dict[str, Any]:
        """The section's values for the service: every field on the page."""
        return dict(self.cleaned_data)

    def initial_extra(self, settings: CampaignSettings) -> dict[str, Any]:
        """Initial values the row does not hold (subclasses)."""
        return {}

    def add_service_errors(self, errors: Mapping[str, list[str]]) -> None:
        for name, messages in errors.items():
            self.add_error(name if name in self.fields else None, messages)


class CampaignSettingsForm(_SectionForm):
    section = CAMPAIGN
    model = Campaign
    field_names = CAMPAIGN_FIELDS
    row_attribute = "campaign"

    def initial_extra(self, settings: CampaignSettings) -> dict[str, Any]:
        return {"annotators": ", ".join(settings.annotators)}

    def customize(self) -> None:
        self.fields["overlap_k"].help_text += " From 1 to 20."
        self.fields["lease_ttl_seconds"].help_text += " From 30 to 86400."
        self.fields["annotators"] = forms.CharField(
            required=False,
            widget=forms.Textarea(attrs={"rows": 2}),
            help_text="Usernames separated by commas or spaces; empty means "
            "every annotator may label here.",
        )

    def clean_annotators(self) -> list[str]:
        raw = self.cleaned_data.get("annotators") or ""
        return [name for name in re.split(r"[\s,]+", raw) if name]


class TrainingSettingsForm(_SectionForm):
    section = TRAINING
    model = TrainingPolicy
    field_names = TRAINING_FIELDS
    row_attribute = "policy"

    def customize(self) -> None:
        self.fields["base_model"] = forms.ModelChoiceField(
            queryset=BaseModelVersion.objects.order_by("name"),
            required=False,
            empty_label="default base model",
            help_text="The base the scheduled pipelines train over.",
        )
        self.fields["tie_policy"] = forms.ChoiceField(
            choices=[(p, p) for p in TIE_POLICIES], help_text=HELP["tie_policy"]
        )
        self.fields["config_overrides"].widget = forms.Textarea(attrs={"rows": 4})
        self.fields["config_overrides"].show_hidden_initial = False
        self.fields[
            "config_overrides"
        ].help_text += (
            " Each method's object is checked against that runner's settings."
        )

    def clean_config_overrides(self) -> Any:
        value = self.cleaned_data.get("config_overrides")
        return {} if value is None else value


class GenerationSettingsForm(_SectionForm):
    section = GENERATION
    model = GenerationSettings
    field_names = GENERATION_FIELDS
    groups = GENERATION_GROUPS
    row_attribute = "generation"

    def bounds(self, name: str) -> dict[str, float]:
        attrs = super().bounds(name)
        limit = GENERATION_LIMITS.get(name)
        if limit is not None:
            if not limit.low_open:
                attrs["min"] = limit.low
            if limit.high is not None:
                attrs["max"] = limit.high
        return attrs

    def customize(self) -> None:
        for name, limit in GENERATION_LIMITS.items():
            field = self.fields[name]
            field.help_text = f"{field.help_text} Must be {limit.wording}.".strip()


def settings_forms(
    data: Mapping[str, Any] | None = None,
    *,
    settings: CampaignSettings,
    read_only: bool = False,
) -> dict[str, _SectionForm]:
    return {
        form.section: form
        for form in (
            CampaignSettingsForm(data, settings=settings, read_only=read_only),
            TrainingSettingsForm(data, settings=settings, read_only=read_only),
            GenerationSettingsForm(data, settings=settings, read_only=read_only),
        )
    }
