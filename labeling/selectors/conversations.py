"""Reads for live conversations: scoped lookups and what the page shows.

What an annotator sees is blind: answers are "left" and "right" as the
turn's ``a_on_left`` placed them, never the versions that wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.safestring import SafeString

from core.templatetags.arbiter import render_markdown
from labeling.models import (
    Campaign,
    Conversation,
    ConversationSettings,
    ConversationTurn,
    Preference,
)
from labeling.rendering import completion_html_of
from labeling.services.conversations import ConversationNotFound, turn_is_stale

CHOICE_WORDS = {
    "left": "left answer",
    "right": "right answer",
    "tie": "tie",
    "both_bad": "both bad",
}


def conversation_get_for_annotator(
    *, annotator: Any, conversation_id: int, campaign_id: int | None = None
) -> Conversation:
    """The annotator's own conversation; ``ConversationNotFound`` for anyone
    else's (or one of another campaign)."""
    qs = Conversation.objects.select_related("campaign").filter(
        pk=conversation_id, annotator=annotator
    )
    if campaign_id is not None:
        qs = qs.filter(campaign_id=campaign_id)
    conversation = qs.first()
    if conversation is None:
        raise ConversationNotFound("That conversation does not exist or is not yours.")
    return conversation


def conversation_turn_get(
    *, conversation: Conversation, number: int
) -> ConversationTurn:
    turn = conversation.turns.filter(number=number).first()
    if turn is None:
        raise ConversationNotFound("That turn does not exist.")
    turn.conversation = conversation
    return turn


def conversation_list_for_annotator(
    *, campaign: Campaign, annotator: Any
) -> QuerySet[Conversation]:
    return Conversation.objects.filter(campaign=campaign, annotator=annotator).order_by(
        "-created_at"
    )


@dataclass(frozen=True)
class TurnView:
    """One turn as the annotator sees it (screen sides only)."""

    number: int
    status: str
    status_label: str
    user_html: SafeString
    left_html: SafeString
    right_html: SafeString
    writing: str  # "left", "right" or ""
    new_tokens: int
    error: str
    stale: bool
    waited_seconds: int
    chosen_html: SafeString | None
    choice_words: str
    rationale: str
    left_cut: bool
    right_cut: bool

    @property
    def in_progress(self) -> bool:
        return self.status in ("queued", "generating")

    @property
    def retryable(self) -> bool:
        return self.status == "failed" or self.stale


def _screen_choice(preference: Preference | None, a_on_left: bool) -> str:
    if preference is None:
        return ""
    if preference.choice in ("tie", "both_bad"):
        return preference.choice
    a_side, b_side = ("left", "right") if a_on_left else ("right", "left")
    return a_side if preference.choice == "a" else b_side


def _answer_html(turn: ConversationTurn, side: str) -> SafeString:
    completion = turn.completion_a if side == "a" else turn.completion_b
    if completion is not None:
        return completion_html_of(completion)
    return render_markdown(turn.text_a if side == "a" else turn.text_b)


def turn_view(turn: ConversationTurn) -> TurnView:
    left, right = ("a", "b") if turn.a_on_left else ("b", "a")
    now = timezone.now()
    started = turn.started_at or turn.created_at
    choice = _screen_choice(turn.preference, turn.a_on_left)

    def cut(side: str) -> bool:
        completion = turn.completion_a if side == "a" else turn.completion_b
        return completion is not None and completion.generation.get("finished") is False

    return TurnView(
        number=turn.number,
        status=turn.status,
        status_label=turn.get_status_display(),
        user_html=render_markdown(turn.user_message),
        left_html=_answer_html(turn, left),
        right_html=_answer_html(turn, right),
        writing={left: "left", right: "right"}.get(turn.writing, ""),
        new_tokens=turn.new_tokens,
        error=turn.error,
        stale=turn_is_stale(turn, now=now),
        waited_seconds=int((now - started).total_seconds()),
        chosen_html=completion_html_of(turn.chosen) if turn.chosen else None,
        choice_words=CHOICE_WORDS.get(choice, ""),
        rationale=turn.preference.rationale if turn.preference else "",
        left_cut=cut(left),
        right_cut=cut(right),
    )


def _turns(conversation: Conversation) -> QuerySet[ConversationTurn]:
    return conversation.turns.select_related(
        "completion_a", "completion_b", "chosen", "preference"
    ).order_by("number")


@dataclass(frozen=True)
class ConversationView:
    conversation: Conversation
    turns: list[TurnView]
    can_send: bool
    turns_left: int

    @property
    def current(self) -> TurnView | None:
        """The last turn while it waits for answers or a choice."""
        if self.turns and self.turns[-1].status != "answered":
            return self.turns[-1]
        return None

    @property
    def answered(self) -> list[TurnView]:
        return [t for t in self.turns if t.status == "answered"]


def can_send(conversation: Conversation, statuses: list[str]) -> bool:
    """Whether the next message may be sent, given the turns' statuses."""
    return (
        conversation.status == Conversation.Status.ACTIVE
        and len(statuses) < conversation.turn_limit
        and (not statuses or statuses[-1] == ConversationTurn.Status.ANSWERED)
    )


def conversation_view(*, conversation: Conversation) -> ConversationView:
    turns = [turn_view(t) for t in _turns(conversation)]
    return ConversationView(
        conversation=conversation,
        turns=turns,
        can_send=can_send(conversation, [t.status for t in turns]),
        turns_left=max(0, conversation.turn_limit - len(turns)),
    )


def conversation_last_turn_view(*, conversation: Conversation) -> ConversationView:
    """Only the last turn (what the page polls while answers are written),
    without rendering the turns before it."""
    last = _turns(conversation).last()
    return ConversationView(
        conversation=conversation,
        turns=[turn_view(last)] if last is not None else [],
        can_send=False,
        turns_left=0,
    )


def conversation_settings_get(*, campaign: Campaign) -> ConversationSettings:
    """The campaign's conversation settings (the defaults, unsaved, when
    they were never changed)."""
    row = ConversationSettings.objects.filter(campaign=campaign).first()
    return row if row is not None else ConversationSettings(campaign=campaign)


def conversation_list_summary(
    *, campaign: Campaign, annotator: Any, limit: int = 50
) -> list[Conversation]:
    """The annotator's latest conversations with ``answered_turns`` and
    ``first_message`` annotated."""
    first = ConversationTurn.objects.filter(
        conversation=OuterRef("pk"), number=1
    ).values("user_message")[:1]
    return list(
        conversation_list_for_annotator(
            campaign=campaign, annotator=annotator
        ).annotate(
            answered_turns=Count("turns", filter=Q(turns__status="answered")),
            first_message=Subquery(first),
        )[:limit]
    )


def conversation_turn_rows(*, conversation: Conversation) -> list[dict[str, Any]]:
    """Every turn as plain text for the API, in screen sides (blind)."""
    now = timezone.now()
    rows = []
    for turn in _turns(conversation):
        left, right = ("a", "b") if turn.a_on_left else ("b", "a")

        def text(side: str, turn: ConversationTurn = turn) -> str:
            completion = turn.completion_a if side == "a" else turn.completion_b
            if completion is not None:
                return completion.text
            return turn.text_a if side == "a" else turn.text_b

        rows.append(
            {
                "number": turn.number,
                "status": turn.status,
                "user_message": turn.user_message,
                "left": text(left),
                "right": text(right),
                "writing": {left: "left", right: "right"}.get(turn.writing, ""),
                "error": turn.error,
                "retryable": turn.status == ConversationTurn.Status.FAILED
                or turn_is_stale(turn, now=now),
                "choice": _screen_choice(turn.preference, turn.a_on_left),
                "chosen": turn.chosen.text if turn.chosen else "",
            }
        )
    return rows
