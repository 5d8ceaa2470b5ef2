"""The two answers of a live-conversation turn, written on a gpu worker.

``conversation_turn_generate_run`` (the ``models_hub.conversation_turn_generate``
task) claims a QUEUED turn for its attempt, picks the conversation's two
versions at its first turn, and writes the two answers, left one first, with
``ml.streaming``: the text so far is written to the turn every
``STREAM_EVERY_TOKENS`` tokens, where the page polls it. The finished answers
are stored as model Completions of the turn's prompt with their version's
lineage (``generation.version_lineage``) plus the conversation, turn and
attempt. Any failure marks the turn FAILED with a message the annotator
reads; the thread before it is untouched and ``conversation_turn_retry``
queues a new attempt. Every write is guarded by the attempt number, so a
worker of a superseded attempt stops at its next write.

Which versions answer (``ConversationSettings.versions``):
- ``champion_base``: the campaign's policy champion against the base model
  it was trained on; without a champion, the default base answers twice
  (two samples, different seeds).
- ``candidate_champion``: the newest candidate policy adapter against the
  champion (else the base); without a candidate, as ``champion_base``.
Sides are shuffled once per conversation (which version is A) and once per
turn (``a_on_left``), and the annotator never sees the versions.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from core.heartbeat import Heartbeat, worker_name
from labeling.models import (
    Completion,
    Conversation,
    ConversationSettings,
    ConversationTurn,
)
from labeling.services.conversations import conversation_settings_for
from models_hub.models import Adapter, BaseModelVersion
from models_hub.selectors import version_get
from models_hub.services.generation import model_completion_store, version_lineage
from models_hub.services.registry import (
    adapter_champion,
    adapter_path,
    base_model_default,
    base_model_local_path,
    generation_settings_for,
)
from models_hub.versions import VersionKey

logger = logging.getLogger(__name__)

STREAM_EVERY_TOKENS = 8
SAME_ANSWER_TRIES = 3

Status = ConversationTurn.Status


class TurnSuperseded(Exception):
    """The turn was retried (a newer attempt) while this one was writing."""


class SameAnswers(Exception):
    """Both versions kept writing the same text."""


def _claim(turn_id: int, attempt: int) -> ConversationTurn | None:
    with transaction.atomic():
        turn = (
            ConversationTurn.objects.select_for_update(of=("self",))
            .select_related("conversation__campaign", "prompt")
            .filter(pk=turn_id)
            .first()
        )
        if turn is None or turn.status != Status.QUEUED or turn.attempt != attempt:
            return None
        turn.status = Status.GENERATING
        turn.started_at = turn.heartbeat_at = timezone.now()
        turn.worker = worker_name()
        turn.save(
            update_fields=[
                "status",
                "started_at",
                "heartbeat_at",
                "worker",
                "updated_at",
            ]
        )
        return turn


def _mine(turn: ConversationTurn) -> Any:
    """The turn's row while it is still this attempt's, for UPDATEs."""
    return ConversationTurn.objects.filter(
        pk=turn.pk, attempt=turn.attempt, status=Status.GENERATING
    )


def _pick_versions(conversation: Conversation, row: ConversationSettings) -> list[str]:
    campaign = conversation.campaign
    champion = adapter_champion(campaign=campaign, role=Adapter.Role.POLICY)
    candidate = None
    if row.versions == ConversationSettings.Versions.CANDIDATE_CHAMPION:
        candidate = (
            Adapter.objects.filter(
                campaign=campaign,
                role=Adapter.Role.POLICY,
                status=Adapter.Status.CANDIDATE,
            )
            .order_by("-version")
            .first()
        )
    if candidate is not None:
        other = (
            VersionKey.adapter(champion.pk)
            if champion is not None
            else VersionKey.base(candidate.base_model_id)
        )
        keys = [VersionKey.adapter(candidate.pk), other]
    elif champion is not None:
        keys = [
            VersionKey.adapter(champion.pk),
            VersionKey.base(champion.base_model_id),
        ]
    else:
        base = base_model_default()
        keys = [VersionKey.base(base.pk), VersionKey.base(base.pk)]
    random.shuffle(keys)
    return [str(k) for k in keys]


def _versions(conversation: Conversation, row: ConversationSettings) -> list[str]:
    """The conversation's two versions (A, B), fixed at its first turn."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if not locked.version_a:
            locked.version_a, locked.version_b = _pick_versions(locked, row)
            locked.save(update_fields=["version_a", "version_b", "updated_at"])
        return [locked.version_a, locked.version_b]


def _params(campaign: Any, row: ConversationSettings, seed: int) -> Any:
    from ml.generation import DecodingParams

    gen = generation_settings_for(campaign)
    return DecodingParams(
        max_new_tokens=row.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        seed=seed,
        batch_size=1,
    )


def _write_answer(
    turn: ConversationTurn,
    side: str,
    key: str,
    *,
    row: ConversationSettings,
    seed: int,
) -> Completion:
    """Stream one answer into ``text_<side>`` and store it as a Completion."""
    from ml.generation import get_generator
    from ml.streaming import generate_streaming

    version = version_get(key=VersionKey.parse(key))
    adapter: Adapter | None = version.adapter
    base: BaseModelVersion | None = version.base_model
    assert base is not None
    spec = (key, str(adapter_path(adapter))) if adapter is not None else None
    field = f"text_{side}"
    if not _mine(turn).update(writing=side, **{field: ""}, heartbeat_at=timezone.now()):
        raise TurnSuperseded

    def on_text(text: str) -> None:
        updated = _mine(turn).update(
            **{field: text.replace("\x00", "\ufffd")},
            partial_writes=F("partial_writes") + 1,
            heartbeat_at=timezone.now(),
        )
        if not updated:
            raise TurnSuperseded

    generator = get_generator(base_model_local_path(base))
    text, record = generate_streaming(
        generator,
        turn.prompt.content,
        adapter=spec,
        params=_params(turn.conversation.campaign, row, seed),
        on_text=on_text,
        every=STREAM_EVERY_TOKENS,
    )
    _mine(turn).update(new_tokens=F("new_tokens") + record["new_tokens"])
    lineage = {
        **version_lineage(adapter, base),
        "conversation": turn.conversation_id,
        "turn": turn.number,
        "attempt": turn.attempt,
    }
    return model_completion_store(
        prompt=turn.prompt,
        text=text,
        adapter=adapter,
        base=base,
        generation={**record, **lineage},
    )


def _generate(turn: ConversationTurn) -> tuple[Completion, Completion]:
    conversation = turn.conversation
    row = conversation_settings_for(campaign=conversation.campaign)
    key_a, key_b = _versions(conversation, row)
    seed = 1009 * conversation.pk + 101 * turn.number + 7 * turn.attempt
    # Written in screen order, left first: A first would show the annotator
    # which side is the same version in every turn (sides shuffle per turn).
    keys = {"a": key_a, "b": key_b}
    first, second = ("a", "b") if turn.a_on_left else ("b", "a")
    written = {first: _write_answer(turn, first, keys[first], row=row, seed=seed)}
    for extra in range(SAME_ANSWER_TRIES):
        other = _write_answer(
            turn, second, keys[second], row=row, seed=seed + 1 + extra
        )
        if other.pk != written[first].pk:
            written[second] = other
            return written["a"], written["b"]
    raise SameAnswers(f"both versions wrote the same answer {SAME_ANSWER_TRIES} times")


def _failure_message(exc: Exception) -> str:
    """What the annotator reads on a failed turn."""
    from ml.streaming import PromptTooLong

    if isinstance(exc, PromptTooLong):
        return (
            f"This conversation is too long for the model: {exc}"[:2000]
            + ". Your conversation so far is kept and recorded."
        )
    # The error's own text stays in the log: it may name the adapter (its
    # path, its version), which would unblind the side that failed.
    return (
        f"The answers could not be written ({type(exc).__name__}). "
        "Your conversation so far is kept: retry this turn."
    )


def conversation_turn_generate_run(*, turn_id: int, attempt: int) -> None:
    """Write both answers of turn ``turn_id`` for ``attempt``; a turn that is
    not QUEUED for that attempt (done, retried, redelivered) is left alone."""
    turn = _claim(turn_id, attempt)
    if turn is None:
        logger.info("models_hub.conversation.skip turn=%s attempt=%s", turn_id, attempt)
        return
    with Heartbeat(ConversationTurn, turn.pk):
        try:
            a, b = _generate(turn)
        except TurnSuperseded:
            logger.info("models_hub.conversation.superseded turn=%s", turn.pk)
            return
        except Exception as exc:  # noqa: BLE001 - process edge: record, never crash the worker
            logger.exception("models_hub.conversation.failed turn=%s", turn.pk)
            close_old_connections()
            _mine(turn).update(
                status=Status.FAILED,
                writing="",
                error=_failure_message(exc),
                finished_at=timezone.now(),
                updated_at=timezone.now(),
            )
            return
    done = _mine(turn).update(
        status=Status.READY,
        completion_a=a,
        completion_b=b,
        writing="",
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    logger.info(
        "models_hub.conversation.ready turn=%s attempt=%s written=%s",
        turn.pk,
        attempt,
        bool(done),
    )
