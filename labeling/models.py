from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from core.models import BaseModel


def content_hash(content: Any) -> str:
    """A stable hash of a prompt or completion (str or chat messages)."""
    canonical = json.dumps(
        content, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Campaign(BaseModel):
    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        PAUSED = "paused", "paused"
        ARCHIVED = "archived", "archived"

    class Mode(models.TextChoices):
        PAIR = "pair", "pair (A/B)"
        RANK = "rank", "rank (3 to 9 completions)"

    name = models.CharField(
        max_length=200, unique=True, help_text="Unique display name."
    )
    description = models.CharField(
        max_length=500, blank=True, help_text="One line shown in lists."
    )
    guidelines = models.TextField(
        blank=True, help_text="Labeling guidelines in Markdown."
    )
    criteria = models.JSONField(
        default=list,
        blank=True,
        help_text='Optional criteria judged separately: [{"name": "helpfulness", "description": "..."}].',
    )
    overlap_k = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Labels wanted per pair (distinct annotators).",
    )
    lease_ttl_seconds = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(30), MaxValueValidator(86_400)],
        help_text="How long a pair stays reserved for the annotator who opened it.",
    )
    label_edit_minutes = models.PositiveSmallIntegerField(
        default=5,
        validators=[MaxValueValidator(1440)],
        help_text="Minutes after answering a pair during which its annotator may "
        "change the label (0: never). A label in a training snapshot is final.",
    )
    snapshot_preference_id = models.PositiveBigIntegerField(
        default=0,
        help_text="The highest preference id frozen into a training snapshot; "
        "those labels can no longer be changed.",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    mode = models.CharField(
        max_length=8,
        choices=Mode.choices,
        default=Mode.PAIR,
        help_text="pair: annotators compare two completions; rank: they order "
        "3 to 9 completions of a prompt (each ranking implies a preference "
        "for every pair of them).",
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of served pairs that are gold pairs (known answer), 0 to 0.5.",
    )
    annotators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="assigned_campaigns",
        help_text="Who may label here; empty means every annotator.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Prompt(BaseModel):
    class Split(models.TextChoices):
        TRAIN = "train", "train"
        VAL = "val", "validation"
        TEST = "test", "test"

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="prompts"
    )
    text = models.TextField(
        blank=True, help_text="The prompt as plain text (empty for chat prompts)."
    )
    messages = models.JSONField(
        null=True,
        blank=True,
        help_text='Chat prompt: [{"role": "system"|"user"|"assistant", "content": "..."}].',
    )
    content_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the prompt content."
    )
    split = models.CharField(
        max_length=8,
        choices=Split.choices,
        help_text="Assigned from the content hash, so a prompt never lands in two splits.",
    )
    is_golden = models.BooleanField(
        default=False,
        help_text="Held out to evaluate every new model; never trained on.",
    )
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "content_hash"],
                name="labeling_prompt_unique_content",
            ),
            models.CheckConstraint(
                condition=Q(messages__isnull=True) | Q(text=""),
                name="labeling_prompt_text_or_messages",
            ),
        ]

    def __str__(self) -> str:
        return (self.text or json.dumps(self.messages, ensure_ascii=False))[:60]

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def content(self) -> str | list[dict[str, str]]:
        return self.messages if self.messages is not None else self.text


class Completion(BaseModel):
    class Origin(models.TextChoices):
        IMPORTED = "imported", "imported"
        MODEL = "model", "model"

    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="completions"
    )
    text = models.TextField(help_text="The completion text (Markdown allowed).")
    html = models.TextField(
        blank=True,
        default="",
        help_text="The text rendered once as sanitised HTML (labeling.rendering).",
    )
    content_hash = models.CharField(max_length=64)
    origin = models.CharField(
        max_length=16, choices=Origin.choices, default=Origin.IMPORTED
    )
    source_label = models.CharField(
        max_length=200,
        blank=True,
        help_text="Who or what wrote it, e.g. an import's 'source'.",
    )
    adapter = models.ForeignKey(
        "models_hub.Adapter",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="completions",
        help_text="The adapter that generated it; empty for imported or base-model text.",
    )
    base_model = models.ForeignKey(
        "models_hub.BaseModelVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="completions",
        help_text="The base model that generated it (with or without an adapter).",
    )
    generation = models.JSONField(
        default=dict,
        blank=True,
        help_text="Decoding parameters and seed for model completions.",
    )
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "content_hash", "source_label"],
                name="labeling_completion_unique",
            )
        ]

    def __str__(self) -> str:
        return self.text[:60]


class Comparison(BaseModel):
    """Two completions of one prompt, waiting for ``campaign.overlap_k`` labels.

    The queue reads only this row: ``label_count``, the expiry times of live
    leases and the annotators who are done with it are kept here so that the
    one-statement ``SELECT ... FOR UPDATE SKIP LOCKED`` re-checks them when
    another transaction changed the row (PostgreSQL re-evaluates a locked
    row's own columns, not sub-queries).
    """

    class Status(models.TextChoices):
        OPEN = "open", "open"
        COMPLETE = "complete", "complete"
        RETIRED = "retired", "retired"
        # A pair of two completions of a ranked comparison (``parent``): it
        # holds the preferences its rankings imply and never enters the queue.
        IMPLIED = "implied", "implied by rankings"

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="comparisons"
    )
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="comparisons"
    )
    completion_a = models.ForeignKey(
        Completion, on_delete=models.CASCADE, related_name="+"
    )
    completion_b = models.ForeignKey(
        Completion, on_delete=models.CASCADE, related_name="+"
    )
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OPEN
    )
    label_count = models.PositiveIntegerField(default=0)
    priority_boost = models.IntegerField(
        default=0,
        help_text="Added by active selection where the reward model is unsure.",
    )
    reward_uncertainty = models.FloatField(
        null=True,
        blank=True,
        help_text="1 - |2 P(A better) - 1| under the reward champion.",
    )
    is_gold = models.BooleanField(
        default=False, help_text="A pair with a known answer, mixed into the queue."
    )
    gold_choice = models.CharField(
        max_length=16,
        blank=True,
        help_text="The known answer of a gold pair: a, b or tie.",
    )
    lease_expiries = ArrayField(models.DateTimeField(), default=list, blank=True)
    done_by = ArrayField(
        models.BigIntegerField(),
        default=list,
        blank=True,
        help_text="Annotators who labeled or skipped it.",
    )
    is_ranked = models.BooleanField(
        default=False,
        help_text="A ranked comparison: its completions are its items "
        "(ComparisonItem, 3 to 9); completion_a/b are its first two.",
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="implied_pairs",
        help_text="For an implied pair (status 'implied'): the ranked comparison "
        "whose rankings it holds as preferences.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(completion_a=F("completion_b")),
                name="labeling_comparison_distinct_sides",
            ),
            # A ranked comparison's first two completions, and the implied
            # pairs of each ranked comparison, may repeat a pair elsewhere.
            models.UniqueConstraint(
                fields=["completion_a", "completion_b"],
                condition=Q(is_ranked=False, parent__isnull=True),
                name="labeling_comparison_unique_pair",
            ),
            models.UniqueConstraint(
                fields=["parent", "completion_a", "completion_b"],
                condition=Q(parent__isnull=False),
                name="labeling_implied_unique_pair",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False)
                | Q(gold_choice__in=["a", "b", "tie"])
                | Q(is_ranked=True, gold_choice="rank"),
                name="labeling_gold_has_answer",
            ),
            models.CheckConstraint(
                condition=Q(parent__isnull=True) | Q(status="implied"),
                name="labeling_implied_has_status",
            ),
        ]
        indexes = [
            # The queue: open pairs of one campaign by effective priority, then age.
            models.Index(
                F("campaign"),
                (F("priority") + F("priority_boost")).desc(),
                F("id"),
                name="labeling_queue_idx",
                condition=Q(status="open", is_gold=False),
            ),
            models.Index(
                F("campaign"),
                F("id"),
                name="labeling_gold_queue_idx",
                condition=Q(status="open", is_gold=True),
            ),
        ]

    def __str__(self) -> str:
        return f"comparison {self.pk}"


class Lease(BaseModel):
    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        SUBMITTED = "submitted", "submitted"
        SKIPPED = "skipped", "skipped"
        EXPIRED = "expired", "expired"

    # No index of its own: the planner must take labeling_lease_active_idx for
    # the live-lease lookup, not a campaign index that grows with every label.
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="leases"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases"
    )
    a_on_left = models.BooleanField(
        help_text="Whether completion A was shown on the left."
    )
    order = ArrayField(
        models.BigIntegerField(),
        null=True,
        blank=True,
        help_text="Ranked comparisons: the completion ids in the order shown "
        "(shuffled per lease); empty for pairs.",
    )
    expires_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["annotator", "campaign", "expires_at"],
                name="labeling_lease_active_idx",
                condition=Q(status="active"),
            ),
            # The labeling card's footer: an annotator's pairs submitted in a
            # campaign, newest first (labels today, latest labels), read
            # from this index alone however many they have submitted.
            models.Index(
                fields=["annotator", "campaign", "updated_at", "id"],
                name="labeling_lease_submitted_idx",
                condition=Q(status="submitted"),
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} ({self.status})"


class Preference(BaseModel):
    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "tie"
        BOTH_BAD = "both_bad", "both bad"

    class Source(models.TextChoices):
        ANNOTATOR = "annotator", "annotator"
        REVIEWER = "reviewer", "reviewer (blind review)"
        ADJUDICATION = "adjudication", "adjudication"
        RANKING = "ranking", "implied by a ranking"

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="preferences"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="preferences"
    )
    lease = models.ForeignKey(
        Lease, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    choice = models.CharField(
        max_length=16,
        choices=Choice.choices,
        help_text="Against the completions, not the screen.",
    )
    a_on_left = models.BooleanField(
        help_text="Whether completion A was shown on the left."
    )
    strength = models.SmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(-3), MaxValueValidator(3)],
        help_text="Optional strength against the completions: -3 (A much better) .. +3 (B much better).",
    )
    criteria = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per-criterion choices: {name: a|b|tie|both_bad}.",
    )
    rationale = models.CharField(max_length=1000, blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    client_request_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(
        max_length=16, choices=Source.choices, default=Source.ANNOTATOR
    )
    version = models.PositiveIntegerField(
        default=1,
        help_text="1 for the first answer, one more for each change by its "
        "annotator; the earlier versions are kept as PreferenceRevision rows.",
    )
    revised_at = models.DateTimeField(
        null=True, blank=True, help_text="When the annotator last changed it."
    )
    ranking = models.ForeignKey(
        "Ranking",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="implied_preferences",
        help_text="The ranking this preference is implied by (source 'ranking').",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                name="labeling_one_preference_per_annotator",
            ),
            models.CheckConstraint(
                condition=Q(strength__isnull=True)
                | Q(strength__gte=-3, strength__lte=3),
                name="labeling_preference_strength_range",
            ),
        ]
        indexes = [
            models.Index(
                fields=["annotator", "created_at"], name="labeling_pref_annotator_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} → {self.choice} on {self.comparison_id}"


class PreferenceRevision(BaseModel):
    """An earlier version of a preference, kept when its annotator changed
    the label: the Preference row always holds the latest version (what
    exports and snapshots read), and nothing an annotator said is lost."""

    preference = models.ForeignKey(
        Preference, on_delete=models.CASCADE, related_name="revisions"
    )
    version = models.PositiveIntegerField(help_text="The version this row was.")
    choice = models.CharField(max_length=16, choices=Preference.Choice.choices)
    a_on_left = models.BooleanField()
    strength = models.SmallIntegerField(null=True, blank=True)
    criteria = models.JSONField(default=dict, blank=True)
    rationale = models.CharField(max_length=1000, blank=True)
    answered_at = models.DateTimeField(help_text="When this version was given.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["preference", "version"],
                name="labeling_revision_unique_version",
            )
        ]

    def __str__(self) -> str:
        return f"preference {self.preference_id} v{self.version}"


class ComparisonItem(BaseModel):
    """One completion of a ranked comparison, at its canonical position."""

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="items"
    )
    completion = models.ForeignKey(
        Completion, on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveSmallIntegerField(
        help_text="0-based canonical position (not what annotators see)."
    )
    gold_rank = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Gold ranked comparisons: this completion's known rank (1 = best).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "position"], name="labeling_item_unique_position"
            ),
            models.UniqueConstraint(
                fields=["comparison", "completion"],
                name="labeling_item_unique_completion",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.position} of comparison {self.comparison_id}"


class Ranking(BaseModel):
    """An annotator's order of a ranked comparison's completions.

    ``order`` is what the annotator saw (completion ids, left to right) and
    ``ranks`` the rank given to each, aligned with ``order``: 1 is best and
    equal ranks are ties. Its implied pairwise preferences are Preference
    rows (source 'ranking') on the comparison's implied pairs.
    """

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="rankings"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    lease = models.ForeignKey(
        Lease, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    order = ArrayField(
        models.BigIntegerField(), help_text="Completion ids in the order shown."
    )
    ranks = ArrayField(
        models.PositiveSmallIntegerField(),
        help_text="Rank of each shown completion (aligned with order); 1 is "
        "best, equal ranks are ties.",
    )
    none_acceptable = models.BooleanField(
        default=False,
        help_text="The annotator found no completion acceptable; its implied "
        "preferences are left out of training by default.",
    )
    reason = models.CharField(max_length=1000, blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    client_request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                name="labeling_one_ranking_per_annotator",
            ),
        ]
        indexes = [
            models.Index(
                fields=["annotator", "created_at"], name="labeling_rank_annotator_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} ranked {self.comparison_id}"

    def rank_of(self) -> dict[int, int]:
        """Completion id to rank."""
        return dict(zip(self.order, self.ranks, strict=True))


# ---------------------------------------------------------------- conversations


class ConversationSettings(BaseModel):
    """A campaign's live conversations: whether annotators may hold them,
    how many turns each may have, and which two model versions answer."""

    class Versions(models.TextChoices):
        CHAMPION_BASE = "champion_base", "the champion against the base model"
        CANDIDATE_CHAMPION = (
            "candidate_champion",
            "the newest candidate against the champion",
        )

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, related_name="conversation_settings"
    )
    live_enabled = models.BooleanField(
        default=False,
        help_text="Annotators may hold live conversations with two model versions.",
    )
    turn_limit = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Most turns (user message + two answers + a choice) per conversation.",
    )
    versions = models.CharField(
        max_length=24,
        choices=Versions.choices,
        default=Versions.CHAMPION_BASE,
        help_text="Which two versions answer. Without a champion the base answers "
        "twice (two samples); without a candidate the champion faces the base.",
    )
    max_new_tokens = models.PositiveSmallIntegerField(
        default=128,
        validators=[MinValueValidator(1), MaxValueValidator(1024)],
        help_text="Longest answer, in tokens.",
    )

    def __str__(self) -> str:
        return f"conversation settings of {self.campaign_id}"


class Conversation(BaseModel):
    """A live conversation between one annotator and two hidden versions."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        FINISHED = "finished", "finished"

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="conversations"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="conversations",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    turn_limit = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="The campaign's turn limit when the conversation started.",
    )
    version_a = models.CharField(
        max_length=32,
        blank=True,
        help_text="The version writing answer A of every turn ('adapter:7', "
        "'base:1'); chosen by the worker at the first turn, never shown to the "
        "annotator.",
    )
    version_b = models.CharField(
        max_length=32, blank=True, help_text="The version writing answer B."
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["annotator", "campaign", "-created_at"],
                name="labeling_conversation_idx",
            )
        ]

    def __str__(self) -> str:
        return f"conversation {self.pk}"


class ConversationTurn(BaseModel):
    """One turn: the annotator's message, two answers written on a gpu
    worker (streamed into ``text_a``/``text_b``), and the annotator's choice.

    The turn's ``prompt`` holds the whole conversation before the answers
    (chat messages); once answered, the turn is an ordinary Comparison with
    its Preference, so exports, snapshots and training read it as any pair.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "waiting for a worker"
        GENERATING = "generating", "writing the answers"
        READY = "ready", "answers ready"
        FAILED = "failed", "failed"
        ANSWERED = "answered", "answered"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="turns"
    )
    number = models.PositiveSmallIntegerField(help_text="1 for the first turn.")
    user_message = models.TextField(help_text="What the annotator wrote.")
    prompt = models.ForeignKey(
        Prompt,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The conversation up to and including this user message.",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    a_on_left = models.BooleanField(
        help_text="Whether answer A is shown on the left (shuffled per turn)."
    )
    attempt = models.PositiveSmallIntegerField(
        default=1,
        help_text="Raised by each retry; a worker writes only for the attempt it runs.",
    )
    text_a = models.TextField(
        blank=True, help_text="Answer A as written so far (streamed)."
    )
    text_b = models.TextField(
        blank=True, help_text="Answer B as written so far (streamed)."
    )
    writing = models.CharField(
        max_length=1, blank=True, help_text="The answer being written now: a or b."
    )
    new_tokens = models.PositiveIntegerField(default=0)
    partial_writes = models.PositiveIntegerField(
        default=0, help_text="How many times the partial answers were written."
    )
    completion_a = models.ForeignKey(
        Completion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    completion_b = models.ForeignKey(
        Completion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    comparison = models.ForeignKey(
        Comparison,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="conversation_turns",
    )
    preference = models.ForeignKey(
        Preference, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    chosen = models.ForeignKey(
        Completion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The answer that carries the conversation on.",
    )
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "number"],
                name="labeling_conversation_turn_unique",
            ),
            models.CheckConstraint(
                condition=Q(number__gte=1), name="labeling_conversation_turn_number"
            ),
        ]

    def __str__(self) -> str:
        return f"turn {self.number} of conversation {self.conversation_id}"
