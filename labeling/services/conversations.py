"""Live conversations: an annotator writes, two hidden versions answer on a
gpu worker, the annotator picks, the chosen answer carries the thread on.

Each turn is stored as the rows every reader already knows: a Prompt whose
``messages`` are the conversation so far (ending with the new user message),
two model Completions (written by ``models_hub.conversation_turn_generate``
with their version's lineage), and, once the annotator picks, one Comparison
(status ``complete``: it never enters the queue), its Lease and the
annotator's Preference. A failed or stalled generation changes nothing
before it: the turn is retried with a new ``attempt`` and the worker of an
older attempt can no longer write to it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.enqueue import enqueue
from core.exceptions import Conflict, NotFound
from labeling.exceptions import LabelingError
from labeling.models import (
    Campaign,
    Comparison,
    Conversation,
    ConversationSettings,
    ConversationTurn,
    Lease,
    Preference,
    Prompt,
    content_hash,
)
from labeling.services.queue import (
    _check_strength_agrees,
    _to_completion_choice,
    _to_completion_strength,
)
from labeling.services.splits import split_for_hash

logger = logging.getLogger(__name__)

GENERATE_TASK = "models_hub.conversation_turn_generate"
MESSAGE_MAX_CHARS = 4000
# A turn whose worker wrote nothing for this long may be retried although
# it is not marked failed (its worker was killed, or the queue is stuck).
STALE_SECONDS = 60

_random = random.SystemRandom()


class ConversationError(LabelingError):
    """A conversation step that is not possible now (400)."""


class ConversationNotFound(NotFound):
    pass


class ConversationBusy(Conflict):
    """The step waits for something else first (409)."""


# ---------------------------------------------------------------- settings


def conversation_settings_for(*, campaign: Campaign) -> ConversationSettings:
    row, _ = ConversationSettings.objects.get_or_create(campaign=campaign)
    return row


def conversation_settings_update(
    *, campaign: Campaign, data: Mapping[str, Any]
) -> ConversationSettings:
    """Change a campaign's conversation settings (``live_enabled``,
    ``turn_limit``, ``versions``, ``max_new_tokens``); a bad value raises
    Django's ValidationError and saves nothing. Running conversations keep
    the turn limit they started with."""
    row = conversation_settings_for(campaign=campaign)
    fields = ["live_enabled", "turn_limit", "versions", "max_new_tokens"]
    for name in fields:
        if name in data:
            setattr(row, name, data[name])
    row.full_clean()
    row.save(update_fields=[*fields, "updated_at"])
    return row


# ---------------------------------------------------------------- the thread


def conversation_thread(*, conversation: Conversation) -> list[dict[str, str]]:
    """The messages of the answered turns: user, chosen answer, user..."""
    messages: list[dict[str, str]] = []
    turns = (
        conversation.turns.filter(status=ConversationTurn.Status.ANSWERED)
        .select_related("chosen")
        .order_by("number")
    )
    for turn in turns:
        assert turn.chosen is not None
        messages.append({"role": "user", "content": turn.user_message})
        messages.append({"role": "assistant", "content": turn.chosen.text})
    return messages


def _prompt_for(
    *, conversation: Conversation, messages: list[dict[str, str]]
) -> Prompt:
    """The chat prompt of one turn: ``messages`` in this conversation. Its
    own row even when another conversation said the same, so that each
    turn's answers, pair and pick are its own (a shared prompt would share
    the answers' rows and so the pair, and the same annotator's second pick
    of it would be lost)."""
    digest = content_hash({"conversation": conversation.pk, "messages": messages})
    prompt, _ = Prompt.objects.get_or_create(
        campaign=conversation.campaign,
        content_hash=digest,
        defaults={
            "messages": messages,
            "split": split_for_hash(digest),
            "metadata": {"source": "conversation", "conversation": conversation.pk},
        },
    )
    return prompt


# ---------------------------------------------------------------- steps


@transaction.atomic
def conversation_start(
    *, campaign: Campaign, annotator: AbstractBaseUser
) -> Conversation:
    """A new live conversation of ``annotator`` in ``campaign``. The caller
    checked that they may label there; raises ``ConversationError`` when the
    campaign has live conversations off or is not active."""
    row = conversation_settings_for(campaign=campaign)
    if not row.live_enabled:
        raise ConversationError("Live conversations are off in this campaign.")
    if campaign.status != Campaign.Status.ACTIVE:
        raise ConversationError("This campaign is not accepting labels right now.")
    conversation = Conversation(
        campaign=campaign, annotator=annotator, turn_limit=row.turn_limit
    )
    conversation.full_clean()
    conversation.save()
    logger.info("labeling.conversation.started conversation=%s", conversation.pk)
    return conversation


def _lock(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


@transaction.atomic
def conversation_message_send(
    *, conversation: Conversation, text: str
) -> ConversationTurn:
    """Start the next turn with the annotator's ``text``: its prompt is the
    thread so far plus this message, and the two answers are queued on the
    gpu worker after commit. Locks the conversation. Raises
    ``ConversationError`` for an empty or too long message, a finished
    conversation or a campaign no longer active, ``ConversationBusy`` while the last turn waits for its
    answers or a choice."""
    text = text.strip()
    if not text:
        raise ConversationError("Write a message first.", extra={"field": "text"})
    if len(text) > MESSAGE_MAX_CHARS:
        raise ConversationError(
            f"A message may have at most {MESSAGE_MAX_CHARS} characters "
            f"(this one has {len(text)}).",
            extra={"field": "text"},
        )
    conversation = _lock(conversation)
    if conversation.status != Conversation.Status.ACTIVE:
        raise ConversationError("This conversation is finished.")
    # Like a lease, a turn already written may still be picked in a paused
    # campaign; no new one starts there.
    if conversation.campaign.status != Campaign.Status.ACTIVE:
        raise ConversationError(
            "This campaign is not accepting labels right now; your conversation "
            "so far is kept."
        )
    # As with a new lease: the campaign must still be open to its annotator
    # (as campaign_list_for_user: no one assigned means everyone).
    if (
        not Campaign.objects.filter(pk=conversation.campaign_id)
        .filter(Q(annotators__isnull=True) | Q(annotators=conversation.annotator_id))
        .exists()
    ):
        raise ConversationError(
            "This campaign is no longer open to you; your conversation so far is kept."
        )
    last = conversation.turns.order_by("-number").first()
    if last is not None and last.status != ConversationTurn.Status.ANSWERED:
        raise ConversationBusy(
            "Pick an answer of the current turn first; its answers are "
            f"{last.get_status_display()}."
        )
    number = (last.number if last is not None else 0) + 1
    if number > conversation.turn_limit:
        raise ConversationError("This conversation reached its turn limit.")
    messages = [
        *conversation_thread(conversation=conversation),
        {"role": "user", "content": text},
    ]
    turn = ConversationTurn(
        conversation=conversation,
        number=number,
        user_message=text,
        prompt=_prompt_for(conversation=conversation, messages=messages),
        a_on_left=_random.random() < 0.5,
    )
    turn.full_clean()
    turn.save()
    enqueue(GENERATE_TASK, turn.pk, turn.attempt)
    logger.info(
        "labeling.conversation.turn_queued conversation=%s turn=%s",
        conversation.pk,
        number,
    )
    return turn


def turn_is_stale(turn: ConversationTurn, *, now: Any = None) -> bool:
    """A queued or generating turn nobody touched for ``STALE_SECONDS``."""
    if turn.status not in (
        ConversationTurn.Status.QUEUED,
        ConversationTurn.Status.GENERATING,
    ):
        return False
    last = turn.heartbeat_at or turn.updated_at
    return (now or timezone.now()) - last > timedelta(seconds=STALE_SECONDS)


@transaction.atomic
def conversation_turn_retry(*, turn: ConversationTurn) -> ConversationTurn:
    """Queue a failed (or stalled) turn's answers again, as a new attempt:
    the thread before it and the user's message are kept. Raises
    ``ConversationBusy`` for a turn that is still being written or that has
    its answers."""
    turn = ConversationTurn.objects.select_for_update().get(pk=turn.pk)
    if turn.status != ConversationTurn.Status.FAILED and not turn_is_stale(turn):
        raise ConversationBusy(
            f"This turn's answers are {turn.get_status_display()}: nothing to retry."
        )
    turn.attempt += 1
    turn.status = ConversationTurn.Status.QUEUED
    turn.text_a = turn.text_b = turn.error = turn.writing = ""
    turn.new_tokens = 0
    turn.heartbeat_at = turn.started_at = turn.finished_at = None
    turn.save(
        update_fields=[
            "attempt",
            "status",
            "text_a",
            "text_b",
            "error",
            "writing",
            "new_tokens",
            "heartbeat_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
    )
    enqueue(GENERATE_TASK, turn.pk, turn.attempt)
    logger.info(
        "labeling.conversation.turn_retried turn=%s attempt=%s", turn.pk, turn.attempt
    )
    return turn


def _comparison_for(turn: ConversationTurn) -> Comparison:
    """The turn's pair, made complete at once (it is never served by the
    queue). Its prompt is the turn's own, so an existing pair of the two
    answers is this turn's from an earlier pick."""
    a, b = turn.completion_a, turn.completion_b
    assert a is not None and b is not None
    existing = (
        Comparison.objects.select_for_update()
        .filter(
            Q(completion_a=a, completion_b=b) | Q(completion_a=b, completion_b=a),
            is_ranked=False,
            parent__isnull=True,
        )
        .first()
    )
    if existing is not None:
        return existing
    return Comparison.objects.create(
        campaign=turn.conversation.campaign,
        prompt=turn.prompt,
        completion_a=a,
        completion_b=b,
        status=Comparison.Status.COMPLETE,
    )


@transaction.atomic
def conversation_turn_choose(
    *,
    turn: ConversationTurn,
    annotator: AbstractBaseUser,
    choice: str,
    strength: int | None = None,
    rationale: str = "",
    time_spent_ms: int | None = None,
) -> ConversationTurn:
    """Record the annotator's pick of a ready turn (``choice`` and
    ``strength`` in screen sides, as on the labeling card) as a Preference on
    the turn's Comparison, and carry the conversation on with the chosen
    answer (on a tie or "both bad", the left one). The conversation finishes
    at its turn limit. Idempotent: a second pick of an answered turn returns
    it unchanged. Locks the turn."""
    turn = (
        ConversationTurn.objects.select_for_update(of=("self",))
        .select_related("conversation__campaign", "completion_a", "completion_b")
        .get(pk=turn.pk)
    )
    if turn.status == ConversationTurn.Status.ANSWERED:
        return turn
    if turn.status != ConversationTurn.Status.READY:
        raise ConversationBusy(
            f"This turn's answers are {turn.get_status_display()}; pick once both are written."
        )
    _check_strength_agrees(choice, strength)
    stored_choice = _to_completion_choice(choice, a_on_left=turn.a_on_left)
    stored_strength = _to_completion_strength(strength, a_on_left=turn.a_on_left)
    comparison = _comparison_for(turn)
    now = timezone.now()
    preference = Preference.objects.filter(
        comparison=comparison, annotator=annotator
    ).first()
    if preference is None:
        lease = Lease.objects.create(
            campaign=comparison.campaign,
            comparison=comparison,
            annotator=annotator,
            a_on_left=turn.a_on_left,
            expires_at=now,
            status=Lease.Status.SUBMITTED,
        )
        preference = Preference(
            comparison=comparison,
            annotator=annotator,
            lease=lease,
            choice=stored_choice,
            a_on_left=turn.a_on_left,
            strength=stored_strength,
            rationale=rationale[:1000],
            time_spent_ms=time_spent_ms,
        )
        preference.full_clean(validate_constraints=False)
        preference.save()
        comparison.label_count += 1
        comparison.done_by = [*comparison.done_by, annotator.pk]
        comparison.save(update_fields=["label_count", "done_by", "updated_at"])
    if stored_choice == Preference.Choice.A:
        chosen = turn.completion_a
    elif stored_choice == Preference.Choice.B:
        chosen = turn.completion_b
    else:
        chosen = turn.completion_a if turn.a_on_left else turn.completion_b
    turn.comparison = comparison
    turn.preference = preference
    turn.chosen = chosen
    turn.status = ConversationTurn.Status.ANSWERED
    turn.save(
        update_fields=["comparison", "preference", "chosen", "status", "updated_at"]
    )
    conversation = turn.conversation
    if turn.number >= conversation.turn_limit:
        conversation.status = Conversation.Status.FINISHED
        conversation.save(update_fields=["status", "updated_at"])
    logger.info(
        "labeling.conversation.turn_answered conversation=%s turn=%s preference=%s",
        conversation.pk,
        turn.number,
        preference.pk,
    )
    return turn


@transaction.atomic
def conversation_finish(*, conversation: Conversation) -> Conversation:
    """End a conversation before its turn limit. A turn still waiting for
    its answers or a choice is left as it is (it records nothing)."""
    conversation = _lock(conversation)
    if conversation.status != Conversation.Status.FINISHED:
        conversation.status = Conversation.Status.FINISHED
        conversation.save(update_fields=["status", "updated_at"])
    return conversation
