"""One campaign's loop settings over REST: read by reviewers, changed by admins."""

from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.parsers import JSONParser
from core.permissions import AdminToWrite, IsReviewer
from core.schema import ApiAutoSchema, ErrorSerializer
from labeling.models import Campaign
from labeling.selectors import TIE_POLICIES
from models_hub.models import BaseModelVersion, GenerationSettings
from training.models import Strategy, TrainingPipeline, TrainingPolicy
from training.services.campaign_settings import (
    FIELDS,
    GENERATION,
    GENERATION_LIMITS,
    TRAINING,
    CampaignSettings,
    campaign_settings_get,
    campaign_settings_update,
    settings_campaign_get,
)


def _help(model: type[models.Model], name: str) -> str:
    """The model's help text, its default, and the limit the service checks,
    so the schema states what the page shows."""
    field = model._meta.get_field(name)
    parts = [str(field.help_text).rstrip(".") + "." if field.help_text else ""]
    if name in GENERATION_LIMITS and model is GenerationSettings:
        parts.append(f"Must be {GENERATION_LIMITS[name].wording}.")
    parts.append(f"Default: {field.get_default()!r}.")
    return " ".join(p for p in parts if p)


class _Section(serializers.Serializer):
    """A section of a partial update: unknown keys are an error, so a typo
    never passes silently."""

    unknown_message = "Not a setting of this section."
    # core.schema.ApiAutoSchema states it: additionalProperties is false.
    refuses_unknown_fields = True

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        errors: dict[str, Any] = {name: [self.unknown_message] for name in unknown}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not errors or not isinstance(exc.detail, dict):
                raise
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value


@extend_schema_serializer(component_name="CampaignSettingsCampaignInput")
class CampaignInput(_Section):
    overlap_k = serializers.IntegerField(
        required=False, help_text=_help(Campaign, "overlap_k") + " From 1 to 20."
    )
    gold_rate = serializers.FloatField(
        required=False, help_text=_help(Campaign, "gold_rate")
    )
    lease_ttl_seconds = serializers.IntegerField(
        required=False,
        help_text=_help(Campaign, "lease_ttl_seconds") + " From 30 to 86400.",
    )
    label_edit_minutes = serializers.IntegerField(
        required=False,
        help_text=_help(Campaign, "label_edit_minutes") + " From 0 to 1440.",
    )
    status = serializers.ChoiceField(choices=Campaign.Status.choices, required=False)
    annotators = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        help_text="Usernames of who may label here (replaces the list); empty "
        "means every annotator. Every username must exist.",
    )


@extend_schema_serializer(component_name="CampaignSettingsTrainingInput")
class TrainingInput(_Section):
    enabled = serializers.BooleanField(
        required=False, help_text=_help(TrainingPolicy, "enabled")
    )
    pipeline = serializers.ChoiceField(
        choices=TrainingPipeline.Kind.choices, required=False
    )
    min_new_preferences = serializers.IntegerField(
        required=False,
        help_text=_help(TrainingPolicy, "min_new_preferences") + " At least 1.",
    )
    min_interval_minutes = serializers.IntegerField(
        required=False, help_text=_help(TrainingPolicy, "min_interval_minutes")
    )
    base_model = serializers.PrimaryKeyRelatedField(
        queryset=BaseModelVersion.objects.all(),
        allow_null=True,
        required=False,
        help_text="Base model id; null: the default base model.",
    )
    config_overrides = serializers.JSONField(
        required=False,
        help_text=_help(TrainingPolicy, "config_overrides")
        + " Each method's object is checked against that runner's config "
        "(see /api/v1/training/config/<method>/).",
    )
    tie_policy = serializers.ChoiceField(choices=TIE_POLICIES, required=False)
    processes = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=_help(TrainingPolicy, "processes"),
    )
    strategy = serializers.ChoiceField(
        choices=[("", "what fits the base model"), *Strategy.choices],
        required=False,
        help_text=_help(TrainingPolicy, "strategy"),
    )


@extend_schema_serializer(component_name="CampaignSettingsGenerationInput")
class GenerationInput(_Section):
    """Every GenerationSettings field: decoding, bootstrap, the promotion
    gate and the guardrails (one row, so one section)."""

    enabled = serializers.BooleanField(
        required=False, help_text=_help(GenerationSettings, "enabled")
    )
    prompts_per_round = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "prompts_per_round")
    )
    compare_against_base = serializers.BooleanField(
        required=False, help_text=_help(GenerationSettings, "compare_against_base")
    )
    priority = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "priority")
    )
    max_new_tokens = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "max_new_tokens")
    )
    temperature = serializers.FloatField(
        required=False, help_text=_help(GenerationSettings, "temperature")
    )
    top_p = serializers.FloatField(
        required=False, help_text=_help(GenerationSettings, "top_p")
    )
    seed = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "seed")
    )
    bootstrap_enabled = serializers.BooleanField(
        required=False, help_text=_help(GenerationSettings, "bootstrap_enabled")
    )
    low_water_mark = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "low_water_mark")
    )
    bootstrap_prompts = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "bootstrap_prompts")
    )
    samples_per_prompt = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "samples_per_prompt")
    )
    require_significant_win = serializers.BooleanField(
        required=False,
        help_text=_help(GenerationSettings, "require_significant_win"),
    )
    auto_promote = serializers.BooleanField(
        required=False, help_text=_help(GenerationSettings, "auto_promote")
    )
    gate_min_comparisons = serializers.IntegerField(
        required=False, help_text=_help(GenerationSettings, "gate_min_comparisons")
    )
    retire_losers = serializers.BooleanField(
        required=False, help_text=_help(GenerationSettings, "retire_losers")
    )
    max_extra_degenerate = serializers.FloatField(
        required=False, help_text=_help(GenerationSettings, "max_extra_degenerate")
    )
    max_length_ratio = serializers.FloatField(
        required=False, help_text=_help(GenerationSettings, "max_length_ratio")
    )
    max_nll_increase = serializers.FloatField(
        required=False, help_text=_help(GenerationSettings, "max_nll_increase")
    )


@extend_schema_serializer(component_name="CampaignSettingsCampaign")
class CampaignSettingsCampaignOutput(serializers.Serializer):
    id = serializers.IntegerField(source="campaign.pk")
    name = serializers.CharField(source="campaign.name")
    overlap_k = serializers.IntegerField(source="campaign.overlap_k")
    gold_rate = serializers.FloatField(source="campaign.gold_rate")
    lease_ttl_seconds = serializers.IntegerField(source="campaign.lease_ttl_seconds")
    label_edit_minutes = serializers.IntegerField(source="campaign.label_edit_minutes")
    status = serializers.ChoiceField(
        choices=Campaign.Status.choices, source="campaign.status"
    )
    annotators = serializers.ListField(
        child=serializers.CharField(),
        help_text="Usernames, sorted; empty means every annotator.",
    )


@extend_schema_serializer(component_name="CampaignSettingsTraining")
class TrainingOutput(serializers.ModelSerializer):
    stored = serializers.SerializerMethodField(
        help_text="False: the campaign has no policy row yet; these are the "
        "defaults the scheduler creates it with."
    )

    class Meta:
        model = TrainingPolicy
        fields = ["stored", *FIELDS[TRAINING], "last_triggered_at"]

    def get_stored(self, policy: TrainingPolicy) -> bool:
        return policy.pk is not None


@extend_schema_serializer(component_name="CampaignSettingsGeneration")
class GenerationOutput(serializers.ModelSerializer):
    stored = serializers.SerializerMethodField(
        help_text="False: the campaign has no generation settings row yet; "
        "these are the defaults the loop creates it with."
    )

    class Meta:
        model = GenerationSettings
        fields = ["stored", *FIELDS[GENERATION]]

    def get_stored(self, row: GenerationSettings) -> bool:
        return row.pk is not None


@extend_schema_serializer(component_name="CampaignSettingsErrors")
class SettingsErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Why the request was refused.")
    campaign = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per invalid campaign field.",
    )
    training = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per invalid training field.",
    )
    generation = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per invalid generation field.",
    )


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class CampaignSettingsApi(APIView):
    """A campaign's loop settings in one document: ``campaign`` (labeling:
    overlap, gold rate, lease time, status, annotators by username),
    ``training`` (the scheduler's policy) and ``generation`` (the whole
    generation settings row: decoding, bootstrap, the promotion gate and the
    guardrails). A section whose row does not exist yet shows the defaults
    the loop would create it with (``stored: false``).

    PATCH is partial: send only the sections and fields to change. All three
    rows change in one transaction; one invalid field answers 400 naming it
    by section (``{"generation": {"temperature": [...]}}``) and nothing
    changes. The answer is the full settings after the change."""

    permission_classes = [IsReviewer, AdminToWrite]
    schema = ApiAutoSchema()
    # Nested sections have no form encoding.
    parser_classes = [JSONParser]

    @extend_schema_serializer(component_name="CampaignSettingsInput")
    class InputSerializer(_Section):
        unknown_message = "Not a section (campaign, training or generation)."

        campaign = CampaignInput(required=False)
        training = TrainingInput(required=False)
        generation = GenerationInput(required=False)

    @extend_schema_serializer(component_name="CampaignSettings")
    class OutputSerializer(serializers.Serializer):
        campaign = CampaignSettingsCampaignOutput(source="*")
        training = TrainingOutput(source="policy")
        generation = GenerationOutput()

    @extend_schema(
        responses={
            200: OutputSerializer,
            401: _error("No credentials (or invalid ones)."),
            403: _error("The user lacks the reviewer role."),
            404: _error("No campaign has this id."),
        }
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = settings_campaign_get(user=request.user, campaign_id=campaign_id)
        settings = campaign_settings_get(campaign=campaign)
        return Response(self.OutputSerializer(settings).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(
                SettingsErrorSerializer,
                description="A field is invalid (wrong type, out of range, an "
                "unknown username, a runner setting the method does not "
                "have): every invalid field is named under its section, and "
                "nothing changed.",
            ),
            401: _error("No credentials (or invalid ones)."),
            403: _error("The user lacks the admin role."),
            404: _error("No campaign has this id."),
        },
    )
    def patch(self, request: Request, campaign_id: int) -> Response:
        campaign = settings_campaign_get(user=request.user, campaign_id=campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        settings: CampaignSettings = campaign_settings_update(
            campaign=campaign,
            campaign_fields=data.get("campaign"),
            training_fields=data.get("training"),
            generation_fields=data.get("generation"),
        )
        return Response(self.OutputSerializer(settings).data)
