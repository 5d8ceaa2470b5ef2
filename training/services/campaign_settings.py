"""One campaign's loop settings in one place.

Three rows hold them: the campaign itself (labeling), its training policy
(the scheduler's thresholds) and its generation settings (decoding,
bootstrap, the promotion gate and the guardrails). ``campaign_settings_get``
reads all three without writing; ``campaign_settings_update`` changes any of
them in one transaction, or nothing at all when one field is invalid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction

from core import roles
from core.exceptions import ApplicationError, NotFound, PermissionDenied
from labeling.models import Campaign
from labeling.selectors import TIE_POLICIES
from labeling.services.campaigns import campaign_update
from ml.config import METHODS
from models_hub.models import GenerationSettings
from models_hub.services.registry import generation_settings_for
from training.exceptions import InvalidTrainingConfig
from training.models import TrainingPolicy
from training.services.jobs import training_config_validate

logger = logging.getLogger(__name__)

CAMPAIGN = "campaign"
TRAINING = "training"
GENERATION = "generation"
SECTIONS = (CAMPAIGN, TRAINING, GENERATION)

CAMPAIGN_FIELDS = (
    "overlap_k",
    "gold_rate",
    "lease_ttl_seconds",
    "label_edit_minutes",
    "status",
)
TRAINING_FIELDS = (
    "enabled",
    "pipeline",
    "min_new_preferences",
    "min_interval_minutes",
    "base_model",
    "config_overrides",
    "tie_policy",
    "processes",
    "strategy",
)
# Grouped as the page shows them; the API keeps them in one "generation"
# section because they are one row.
GENERATION_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Generation",
        (
            "enabled",
            "prompts_per_round",
            "compare_against_base",
            "priority",
            "max_new_tokens",
            "temperature",
            "top_p",
            "seed",
        ),
    ),
    (
        "Bootstrap",
        (
            "bootstrap_enabled",
            "low_water_mark",
            "bootstrap_prompts",
            "samples_per_prompt",
        ),
    ),
    (
        "Promotion",
        (
            "require_significant_win",
            "auto_promote",
            "gate_min_comparisons",
            "retire_losers",
        ),
    ),
    ("Guardrails", ("max_extra_degenerate", "max_length_ratio", "max_nll_increase")),
)
GENERATION_FIELDS = tuple(name for _, names in GENERATION_GROUPS for name in names)
FIELDS: dict[str, tuple[str, ...]] = {
    CAMPAIGN: (*CAMPAIGN_FIELDS, "annotators"),
    TRAINING: TRAINING_FIELDS,
    GENERATION: GENERATION_FIELDS,
}


@dataclass(frozen=True)
class Limit:
    """A bound the loop relies on that the model's validators do not carry
    (the sampler divides by the temperature, a bootstrap pair needs two
    samples, the gate needs a comparison)."""

    low: float
    low_open: bool = False
    high: float | None = None

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    @property
    def wording(self) -> str:
        low = f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        return low if self.high is None else f"{low} and at most {self.high:g}"


GENERATION_LIMITS: dict[str, Limit] = {
    "max_new_tokens": Limit(1),
    "temperature": Limit(0, low_open=True),
    "top_p": Limit(0, low_open=True, high=1),
    "bootstrap_prompts": Limit(1),
    "samples_per_prompt": Limit(2),
    "gate_min_comparisons": Limit(1),
    "max_extra_degenerate": Limit(0, high=1),
    "max_length_ratio": Limit(0, low_open=True),
    "max_nll_increase": Limit(0),
}

Errors = dict[str, dict[str, list[str]]]
UserLike = AbstractBaseUser | AnonymousUser


class CampaignSettingsInvalid(ApplicationError):
    """One or more settings are invalid; nothing was changed. ``errors`` is
    ``{section: {field: [messages]}}``, returned beside ``detail``."""

    def __init__(self, errors: Errors) -> None:
        super().__init__(
            "Some settings are invalid; nothing was changed.", extra=dict(errors)
        )
        self.errors = errors


@dataclass(frozen=True)
class CampaignSettings:
    """The three rows, as the loop uses them. A policy or generation row that
    does not exist yet is an unsaved instance holding the defaults the loop
    creates it with (``policies_ensure``, ``generation_settings_for``)."""

    campaign: Campaign
    annotators: list[str]
    policy: TrainingPolicy
    generation: GenerationSettings

    @property
    def policy_stored(self) -> bool:
        return self.policy.pk is not None

    @property
    def generation_stored(self) -> bool:
        return self.generation.pk is not None


def settings_campaign_get(*, user: UserLike, campaign_id: int) -> Campaign:
    """The campaign whose settings ``user`` may see: reviewers and admins see
    every campaign's, so an id of no campaign is a 404."""
    if not roles.is_reviewer(user):
        raise PermissionDenied(roles.missing_role_message(roles.REVIEWER))
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound("No campaign has this id.")
    return campaign


def campaign_settings_get(*, campaign: Campaign) -> CampaignSettings:
    """Read the campaign's settings. Never writes (GET pages call it)."""
    policy = TrainingPolicy.objects.select_related("base_model").filter(
        campaign=campaign
    ).first() or TrainingPolicy(campaign=campaign)
    generation = GenerationSettings.objects.filter(
        campaign=campaign
    ).first() or GenerationSettings(campaign=campaign)
    annotators = sorted(campaign.annotators.values_list("username", flat=True))
    return CampaignSettings(
        campaign=campaign, annotators=annotators, policy=policy, generation=generation
    )


@transaction.atomic
def campaign_settings_update(
    *,
    campaign: Campaign,
    campaign_fields: Mapping[str, Any] | None = None,
    training_fields: Mapping[str, Any] | None = None,
    generation_fields: Mapping[str, Any] | None = None,
) -> CampaignSettings:
    """Change the named fields of any of the three sections; fields not named
    keep their values. ``campaign_fields["annotators"]`` is a list of
    usernames (empty: every annotator may label). ``config_overrides`` is
    ``{method: {runner field: value}}``, each checked by the runner's own
    config. A missing policy or generation row is created with the defaults
    first.

    Every field is checked before anything is written; any invalid one raises
    ``CampaignSettingsInvalid`` naming every invalid field, and the whole
    transaction (rows created here included) rolls back.
    """
    given = {
        CAMPAIGN: dict(campaign_fields or {}),
        TRAINING: dict(training_fields or {}),
        GENERATION: dict(generation_fields or {}),
    }
    errors: Errors = {}
    for section, data in given.items():
        for name in sorted(set(data) - set(FIELDS[section])):
            _add(errors, section, name, ["Not a setting of this section."])

    locked = Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    if locked is None:
        raise NotFound("No campaign has this id.")
    campaign = locked
    annotators: list[AbstractBaseUser] | None = None
    if "annotators" in given[CAMPAIGN]:
        annotators = _annotators(errors, given[CAMPAIGN]["annotators"])
    campaign_data = {k: v for k, v in given[CAMPAIGN].items() if k in CAMPAIGN_FIELDS}
    _apply(errors, CAMPAIGN, campaign, campaign_data)

    policy: TrainingPolicy | None = None
    if given[TRAINING]:
        # The same defaults as the scheduler's policies_ensure().
        TrainingPolicy.objects.get_or_create(campaign=campaign)
        policy = TrainingPolicy.objects.select_for_update().get(campaign=campaign)
        data = {k: v for k, v in given[TRAINING].items() if k in TRAINING_FIELDS}
        _apply(errors, TRAINING, policy, data)
        _check_training(errors, data)

    generation: GenerationSettings | None = None
    if given[GENERATION]:
        generation_settings_for(campaign)
        generation = GenerationSettings.objects.select_for_update().get(
            campaign=campaign
        )
        data = {k: v for k, v in given[GENERATION].items() if k in GENERATION_FIELDS}
        _apply(errors, GENERATION, generation, data)
        _check_generation(errors, generation, data)

    if errors:
        raise CampaignSettingsInvalid(errors)

    if campaign_data or annotators is not None:
        update: dict[str, Any] = dict(campaign_data)
        if annotators is not None:
            update["annotator_ids"] = [user.pk for user in annotators]
        campaign = campaign_update(campaign=campaign, data=update)
    if policy is not None:
        _save(policy, given[TRAINING])
    if generation is not None:
        _save(generation, given[GENERATION])
    logger.info(
        "training.campaign_settings.updated campaign=%s fields=%s",
        campaign.pk,
        {section: sorted(data) for section, data in given.items() if data},
    )
    return campaign_settings_get(campaign=campaign)


def _add(errors: Errors, section: str, name: str, messages: Sequence[str]) -> None:
    errors.setdefault(section, {}).setdefault(name, []).extend(messages)


def _annotators(errors: Errors, value: Any) -> list[AbstractBaseUser] | None:
    if isinstance(value, str) or not isinstance(value, Sequence):
        _add(errors, CAMPAIGN, "annotators", ["A list of usernames."])
        return None
    if not all(isinstance(name, str) for name in value):
        _add(errors, CAMPAIGN, "annotators", ["Every username must be a string."])
        return None
    wanted = sorted({name.strip() for name in value if name.strip()})
    users = list(get_user_model().objects.filter(username__in=wanted))
    unknown = sorted(set(wanted) - {user.get_username() for user in users})
    if unknown:
        _add(
            errors,
            CAMPAIGN,
            "annotators",
            [f"Unknown usernames: {', '.join(unknown)}."],
        )
        return None
    return users


def _apply(
    errors: Errors, section: str, row: models.Model, data: Mapping[str, Any]
) -> None:
    """Set ``data`` on ``row`` and run the model's validation, collecting the
    errors of the named fields (a stored value the request does not touch is
    not this request's error)."""
    if not data:
        return
    for name, value in data.items():
        try:
            setattr(row, name, value)
        except (TypeError, ValueError) as exc:
            _add(errors, section, name, [str(exc)])
    others = [f.name for f in row._meta.concrete_fields if f.name not in data]
    try:
        # The table's check constraints are GENERATION_LIMITS, checked per
        # field below; Django would report them without naming a field.
        row.full_clean(exclude=others, validate_constraints=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            _add(
                errors,
                section,
                "non_field_errors" if name == NON_FIELD_ERRORS else name,
                messages,
            )


def _check_training(errors: Errors, data: Mapping[str, Any]) -> None:
    if "tie_policy" in data and data["tie_policy"] not in TIE_POLICIES:
        _add(
            errors,
            TRAINING,
            "tie_policy",
            [f"Must be one of {', '.join(TIE_POLICIES)}."],
        )
    if "config_overrides" not in data:
        return
    overrides = data["config_overrides"]
    if not isinstance(overrides, Mapping):
        _add(
            errors,
            TRAINING,
            "config_overrides",
            ['A JSON object per method, e.g. {"dpo": {"learning_rate": 0.0005}}.'],
        )
        return
    for method, method_overrides in overrides.items():
        if method not in METHODS:
            _add(
                errors,
                TRAINING,
                "config_overrides",
                [f"{method}: not a method (one of {', '.join(METHODS)})."],
            )
            continue
        if not isinstance(method_overrides, Mapping):
            _add(
                errors,
                TRAINING,
                "config_overrides",
                [f"{method}: must be a JSON object of runner settings."],
            )
            continue
        try:
            training_config_validate(method=method, overrides=method_overrides)
        except InvalidTrainingConfig as exc:
            _add(errors, TRAINING, "config_overrides", [f"{method}: {exc.message}"])


def _check_generation(
    errors: Errors, row: GenerationSettings, data: Mapping[str, Any]
) -> None:
    failed = errors.get(GENERATION, {})
    for name in data:
        if name in failed:
            continue
        value = getattr(row, name)
        if isinstance(value, float) and not math.isfinite(value):
            _add(errors, GENERATION, name, ["Must be a finite number."])
            continue
        limit = GENERATION_LIMITS.get(name)
        if limit is not None and not limit.allows(value):
            _add(errors, GENERATION, name, [f"Must be {limit.wording}."])


def _save(row: models.Model, data: Mapping[str, Any]) -> None:
    row.save(update_fields=[*data, "updated_at"])
