from __future__ import annotations

import json
from typing import Any

from django import forms

from core.exceptions import ApplicationError
from labeling.models import Campaign
from ml.config import config_class
from models_hub.models import BaseModelVersion
from training.models import MAX_PROCESSES, METHOD_CHOICES, DatasetSnapshot, Strategy
from training.services.jobs import JobPlan, training_config_resolve, training_job_plan


class JobLaunchForm(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all())
    method = forms.ChoiceField(choices=METHOD_CHOICES, initial="dpo")
    base_model = forms.ModelChoiceField(
        queryset=BaseModelVersion.objects.all(),
        required=False,
        empty_label="default base model",
    )
    snapshot = forms.ModelChoiceField(
        queryset=DatasetSnapshot.objects.select_related("campaign"),
        required=False,
        empty_label="all labels so far (new snapshot)",
    )
    learning_rate = forms.FloatField(
        required=False,
        min_value=1e-7,
        max_value=0.5,
        help_text="Leave empty for the method's default.",
    )
    num_train_epochs = forms.FloatField(required=False, min_value=0.1, max_value=100)
    max_steps = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    lora_r = forms.IntegerField(
        required=False, min_value=1, max_value=512, label="LoRA rank"
    )
    processes = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PROCESSES,
        label="Processes (GPUs)",
        help_text="One per GPU; on a worker without a GPU, CPU processes. Leave "
        "empty for what fits the base model (the campaign policy may set it).",
    )
    strategy = forms.ChoiceField(
        required=False,
        choices=[("", "what fits the base model"), *Strategy.choices],
        help_text="How several processes share the work.",
    )
    config_json = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="More settings (JSON)",
        help_text='Any runner field, e.g. {"beta": 0.1, "peft": {"peft_type": "ia3"}}.',
    )

    def plan(self) -> tuple[JobPlan | None, str]:
        """What a launch with the current fields would run (the method's
        defaults, the campaign's training policy, these fields: the service's
        own resolution) and its memory estimate; or why it cannot say."""
        if self.is_bound:
            if not self.is_valid():
                return None, "Correct the fields marked below to see what will run."
            campaign = self.cleaned_data["campaign"]
            method = self.cleaned_data["method"]
            base = self.cleaned_data["base_model"]
            overrides = self.config_overrides()
        else:
            raw = str(self.initial.get("campaign") or "")
            campaign = (
                Campaign.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
            )
            method, base, overrides = "dpo", None, {}
        base = base or BaseModelVersion.objects.filter(is_default=True).first()
        try:
            config = training_config_resolve(
                campaign=campaign, method=method, overrides=overrides
            )
        except ApplicationError as exc:
            return None, exc.message
        if base is None:
            return JobPlan(method=method, config=config, limit=0, shape_known=False), ""
        return training_job_plan(method=method, config=config, base_model=base), ""

    def method_defaults(self) -> list[dict[str, Any]]:
        """What each method runs with when a field is left empty: read from
        the runner configs themselves, so the page cannot drift from them."""
        rows = []
        for method, _label in METHOD_CHOICES:
            extra = {"reward_adapter": "-"} if method in ("ppo", "rloo") else {}
            config = config_class(method)(base_model="-", **extra)
            rows.append(
                {
                    "method": method,
                    "learning_rate": config.learning_rate,
                    "num_train_epochs": config.num_train_epochs,
                    "batch_size": config.per_device_train_batch_size,
                    "max_length": config.max_length,
                    "early_stopping_patience": config.early_stopping_patience,
                    "lora_r": config.peft.r,
                }
            )
        return rows

    def resources(self) -> dict[str, Any]:
        """``processes``/``strategy`` for ``training_job_launch`` (None:
        resolved there from the policy and the base model's size)."""
        return {
            "processes": self.cleaned_data.get("processes"),
            "strategy": self.cleaned_data.get("strategy") or None,
        }

    def config_overrides(self) -> dict[str, Any]:
        data = self.cleaned_data
        overrides: dict[str, Any] = {}
        raw = data.get("config_json") or ""
        if raw.strip():
            overrides = json.loads(raw)
        for name in ("learning_rate", "num_train_epochs", "max_steps"):
            if data.get(name) is not None:
                overrides[name] = data[name]
        if data.get("lora_r"):
            overrides.setdefault("peft", {})["r"] = data["lora_r"]
        return overrides

    def clean_config_json(self) -> str:
        raw = self.cleaned_data.get("config_json") or ""
        if raw.strip():
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(
                    f"Not valid JSON: {exc.msg} (line {exc.lineno})."
                ) from None
            if not isinstance(value, dict):
                raise forms.ValidationError("Must be a JSON object.")
        return raw
