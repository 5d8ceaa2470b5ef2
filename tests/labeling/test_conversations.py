"""Live conversations with the real gpu worker on a tiny random Llama: each
turn's two answers are streamed into the turn, the annotator's pick is a
preference whose prompt is the whole conversation so far, and a failed
generation leaves the thread intact and retryable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from labeling.models import (
    Campaign,
    Completion,
    Conversation,
    ConversationTurn,
    Preference,
)
from labeling.selectors import preference_export_rows
from labeling.services.conversations import (
    ConversationBusy,
    ConversationError,
    conversation_message_send,
    conversation_settings_update,
    conversation_start,
    conversation_turn_choose,
    conversation_turn_retry,
)
from models_hub.models import BaseModelVersion
from tests.labeling.factories import CampaignFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _campaign(turn_limit: int = 3) -> Campaign:
    campaign = CampaignFactory()
    conversation_settings_update(
        campaign=campaign,
        data={"live_enabled": True, "turn_limit": turn_limit, "max_new_tokens": 24},
    )
    return campaign


def _wait(
    turn: ConversationTurn, workers: dict[str, Any], seconds: float = 120
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        turn.refresh_from_db()
        if turn.status in ("ready", "failed"):
            return
        time.sleep(0.2)
    log = workers["logs"]["gpu"].read_text()[-4000:]
    pytest.fail(f"turn {turn.pk} still {turn.status}:\n{log}")


def test_three_turns_make_three_preferences_on_the_growing_thread(
    celery_workers: dict[str, Any], tiny_base: BaseModelVersion, annotator: Any
) -> None:
    """Three turns of a live conversation: each turn's answers are written by
    the gpu worker (streamed into the turn, then stored as completions with
    the base's lineage and the turn number), each pick is a preference whose
    prompt is the conversation so far, the chosen answer joins the thread,
    and the conversation finishes at its turn limit. Exports carry each turn
    as TRL's conversational format."""
    campaign = _campaign(turn_limit=3)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    picks = ["left", "right", "left"]
    thread: list[dict[str, str]] = []
    for number, pick in enumerate(picks, start=1):
        text = f"tell me about the cat number {number} ."
        turn = conversation_message_send(conversation=conversation, text=text)
        assert turn.number == number
        assert turn.prompt.messages == [*thread, {"role": "user", "content": text}]
        with pytest.raises(ConversationBusy, match="Pick an answer"):
            conversation_message_send(conversation=conversation, text="too early")
        _wait(turn, celery_workers)
        assert turn.status == "ready", turn.error
        a, b = turn.completion_a, turn.completion_b
        assert a is not None and b is not None and a.pk != b.pk
        # What was streamed into the turn is what was stored.
        assert (turn.text_a, turn.text_b) == (a.text, b.text)
        for completion in (a, b):
            assert completion.origin == Completion.Origin.MODEL
            assert completion.adapter is None
            assert completion.base_model_id == tiny_base.pk
            assert completion.generation["turn"] == number
            assert completion.generation["conversation"] == conversation.pk
            assert completion.prompt_id == turn.prompt_id
        answered = conversation_turn_choose(
            turn=turn, annotator=annotator, choice=pick, rationale=f"pick {number}"
        )
        left, right = (a, b) if turn.a_on_left else (b, a)
        chosen = left if pick == "left" else right
        assert answered.chosen_id == chosen.pk
        # A second pick (double click) changes nothing.
        again = conversation_turn_choose(turn=turn, annotator=annotator, choice="tie")
        assert again.preference_id == answered.preference_id
        preference = Preference.objects.get(pk=answered.preference_id)
        assert preference.choice == ("a" if chosen.pk == a.pk else "b")
        assert preference.comparison.prompt_id == turn.prompt_id
        assert preference.comparison.status == "complete"
        thread += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": chosen.text},
        ]

    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.FINISHED
    assert conversation.version_a == conversation.version_b == f"base:{tiny_base.pk}"
    with pytest.raises(ConversationError, match="finished"):
        conversation_message_send(conversation=conversation, text="one more")

    preferences = list(
        Preference.objects.filter(annotator=annotator)
        .select_related("comparison__prompt")
        .order_by("id")
    )
    assert len(preferences) == 3
    lengths = [len(p.comparison.prompt.messages) for p in preferences]
    assert lengths == [1, 3, 5]
    assert preferences[2].comparison.prompt.messages[:4] == thread[:4]
    turns = list(conversation.turns.order_by("number"))
    assert [t.number for t in turns] == [1, 2, 3]
    assert sum(t.partial_writes for t in turns) > 0  # answers were streamed

    rows = {
        r["preference_id"]: r
        for r in preference_export_rows(campaign=campaign, splits=None)
    }
    for preference, turn in zip(preferences, turns, strict=True):
        row = rows[preference.pk]
        assert row["prompt"] == turn.prompt.messages
        assert row["chosen"] == [{"role": "assistant", "content": turn.chosen.text}]
        assert row["rejected"][0]["role"] == "assistant"
        assert row["rejected"][0]["content"] != turn.chosen.text

    if any(p.comparison.prompt.split == "train" for p in preferences):
        from django.conf import settings

        from training.services.snapshots import dataset_snapshot_create

        snapshot = dataset_snapshot_create(campaign=campaign)
        folder = Path(settings.STORAGE_ROOT) / snapshot.storage_path / "preference"
        lines = [
            json.loads(line)
            for split in ("train", "val")
            for line in (folder / f"{split}.jsonl").read_text().splitlines()
        ]
        assert lines and all(isinstance(r["prompt"], list) for r in lines)
        assert {len(r["prompt"]) for r in lines} <= {1, 3, 5}
        assert all(r["chosen"][0]["role"] == "assistant" for r in lines)


def test_a_failed_generation_keeps_the_thread_and_can_be_retried(
    celery_workers: dict[str, Any], tiny_base: BaseModelVersion, annotator: Any
) -> None:
    """When the worker cannot write a turn's answers (here its base model's
    files are gone), the turn is marked failed with a message saying the
    conversation is kept; earlier turns, their preferences and the user's
    message are untouched, nothing new can be sent until the turn is
    retried, and a retry (a new attempt) writes the answers and the
    conversation goes on."""
    campaign = _campaign(turn_limit=3)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    first = conversation_message_send(conversation=conversation, text="hello there")
    _wait(first, celery_workers)
    conversation_turn_choose(turn=first, annotator=annotator, choice="left")

    source = tiny_base.source
    BaseModelVersion.objects.filter(pk=tiny_base.pk).update(
        source=str(Path(source).parent / "gone")
    )
    second = conversation_message_send(
        conversation=conversation, text="tell me about the river ."
    )
    _wait(second, celery_workers)
    assert second.status == "failed"
    assert "Your conversation so far is kept: retry this turn." in second.error
    assert second.completion_a is None and second.comparison is None
    first.refresh_from_db()
    assert first.status == "answered" and first.preference is not None
    assert Preference.objects.filter(annotator=annotator).count() == 1
    with pytest.raises(ConversationBusy, match="Pick an answer"):
        conversation_message_send(conversation=conversation, text="skip it")

    BaseModelVersion.objects.filter(pk=tiny_base.pk).update(source=source)
    retried = conversation_turn_retry(turn=second)
    assert retried.attempt == 2 and retried.status == "queued" and not retried.error
    with pytest.raises(ConversationBusy, match="nothing to retry"):
        conversation_turn_retry(turn=second)
    _wait(second, celery_workers)
    assert second.status == "ready", second.error
    assert second.user_message == "tell me about the river ."
    assert second.completion_a.generation["attempt"] == 2
    answered = conversation_turn_choose(turn=second, annotator=annotator, choice="tie")
    # On a tie the left answer carries the conversation on.
    left = second.completion_a if second.a_on_left else second.completion_b
    assert answered.chosen_id == left.pk
    third = conversation_message_send(conversation=conversation, text="and then ?")
    assert [m["role"] for m in third.prompt.messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert third.prompt.messages[1]["content"] == first.chosen.text
    assert Preference.objects.filter(annotator=annotator).count() == 2
    # The worker writes the third turn's answers; the test ends after it, not
    # while its task still writes (a flush then meets the task's locks).
    _wait(third, celery_workers)
    assert third.status == "ready", third.error


def test_live_conversations_are_off_unless_the_campaign_turns_them_on(
    annotator: Any,
) -> None:
    """A campaign starts with live conversations off; an empty or too long
    message, or any message once the campaign is paused, is refused and
    creates no turn."""
    campaign = CampaignFactory()
    with pytest.raises(ConversationError, match="off in this campaign"):
        conversation_start(campaign=campaign, annotator=annotator)
    campaign = _campaign(turn_limit=2)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    assert conversation.turn_limit == 2
    with pytest.raises(ConversationError, match="Write a message"):
        conversation_message_send(conversation=conversation, text="   ")
    with pytest.raises(ConversationError, match="at most 4000"):
        conversation_message_send(conversation=conversation, text="x" * 4001)
    assert not conversation.turns.exists()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    with pytest.raises(ConversationError, match="not accepting labels"):
        conversation_message_send(conversation=conversation, text="hello")
    assert not conversation.turns.exists()


def _adapter(campaign: Campaign, base: BaseModelVersion, *, status: str) -> Any:
    from models_hub.models import Adapter
    from models_hub.services.registry import adapter_register

    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path=f"adapters/conversation-test-{campaign.pk}-{status}",
        metrics={},
    )
    Adapter.objects.filter(pk=adapter.pk).update(status=status)
    adapter.refresh_from_db()
    return adapter


def test_the_campaign_setting_picks_which_versions_answer(
    tiny_base: BaseModelVersion, annotator: Any
) -> None:
    """champion_base: the champion and its base; candidate_champion: the
    newest candidate and the champion, else as champion_base; without a
    champion the base answers twice. The pick is fixed per conversation."""
    from models_hub.services.conversation_generation import _pick_versions, _versions

    campaign = _campaign()
    settings_row = conversation_settings_update(campaign=campaign, data={})
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    base = f"base:{tiny_base.pk}"
    assert _pick_versions(conversation, settings_row) == [base, base]
    champion = _adapter(campaign, tiny_base, status="champion")
    assert sorted(_pick_versions(conversation, settings_row)) == sorted(
        [f"adapter:{champion.pk}", base]
    )
    settings_row = conversation_settings_update(
        campaign=campaign, data={"versions": "candidate_champion"}
    )
    assert sorted(_pick_versions(conversation, settings_row)) == sorted(
        [f"adapter:{champion.pk}", base]
    )
    candidate = _adapter(campaign, tiny_base, status="candidate")
    picked = _versions(conversation, settings_row)
    assert sorted(picked) == sorted(
        [f"adapter:{candidate.pk}", f"adapter:{champion.pk}"]
    )
    conversation.refresh_from_db()
    assert [conversation.version_a, conversation.version_b] == picked
    _adapter(campaign, tiny_base, status="candidate")  # a newer one comes later
    assert _versions(conversation, settings_row) == picked


def test_a_turn_answered_by_the_champion_and_the_base_records_both_lineages(
    celery_workers: dict[str, Any],
    tiny_base: BaseModelVersion,
    tiny_model_dir: Path,
    annotator: Any,
) -> None:
    """With a champion LoRA adapter, one answer of a turn is the champion's
    (adapter and base recorded on the completion) and the other the base's
    alone; the preference's pair carries both."""
    from ml.tiny import build_random_lora
    from models_hub.services.registry import adapter_path

    campaign = _campaign(turn_limit=1)
    champion = _adapter(campaign, tiny_base, status="champion")
    build_random_lora(tiny_model_dir, adapter_path(champion), seed=5)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    turn = conversation_message_send(conversation=conversation, text="hello cat")
    _wait(turn, celery_workers)
    assert turn.status == "ready", turn.error
    answered = conversation_turn_choose(turn=turn, annotator=annotator, choice="right")
    comparison = answered.comparison
    lineages = {
        (c.adapter_id, c.base_model_id)
        for c in (comparison.completion_a, comparison.completion_b)
    }
    assert lineages == {(champion.pk, tiny_base.pk), (None, tiny_base.pk)}
    conversation.refresh_from_db()
    assert conversation.status == "finished"


def test_a_conversation_too_long_for_the_model_fails_with_a_clear_message(
    celery_workers: dict[str, Any], tiny_base: BaseModelVersion, annotator: Any
) -> None:
    """A message that, with an answer, would not fit the model's context
    (512 positions for the tiny Llama) fails the turn saying so instead of
    crashing inside the model."""
    campaign = _campaign(turn_limit=1)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    turn = conversation_message_send(conversation=conversation, text="the cat " * 400)
    _wait(turn, celery_workers)
    assert turn.status == "failed"
    assert "too long for the model" in turn.error
    assert "context of 512 tokens" in turn.error


@pytest.mark.django_db
def test_the_left_answer_is_written_first_whichever_version_wrote_it(
    tiny_base: BaseModelVersion, annotator: Any
) -> None:
    """The answers are written in screen order (left, then right), so which
    side streams first never tells the annotator which version is which: the
    versions are fixed per conversation, the sides shuffled per turn."""
    from models_hub.services.conversation_generation import (
        conversation_turn_generate_run,
    )

    campaign = _campaign(turn_limit=1)
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    turn = conversation_message_send(conversation=conversation, text="hello cat .")
    # Answer B on the left: it is the one written (and stored) first.
    ConversationTurn.objects.filter(pk=turn.pk).update(a_on_left=False)
    conversation_turn_generate_run(turn_id=turn.pk, attempt=turn.attempt)
    turn.refresh_from_db()
    assert turn.status == "ready", turn.error
    assert turn.completion_b_id < turn.completion_a_id


def test_a_failure_message_never_names_the_version_that_failed() -> None:
    """The annotator reads what kind of failure stopped the answers, never
    its details: an error's text may hold the adapter's path or version,
    which would tell them which model writes the side that failed."""
    from models_hub.services.conversation_generation import _failure_message

    message = _failure_message(
        FileNotFoundError(2, "No such file", "/storage/adapters/adapter-7/w.bin")
    )
    assert "adapter-7" not in message and "/storage" not in message
    assert message == (
        "The answers could not be written (FileNotFoundError). "
        "Your conversation so far is kept: retry this turn."
    )


@pytest.mark.django_db
def test_an_annotator_taken_off_the_campaign_starts_no_new_turn(
    annotator: Any, make_user: Any
) -> None:
    """Like a new lease, a new turn needs the campaign to be open to its
    annotator: once taken off an assigned campaign they keep their
    conversation so far but cannot send another message."""
    campaign = _campaign()
    campaign.annotators.add(annotator, make_user())
    conversation = conversation_start(campaign=campaign, annotator=annotator)
    campaign.annotators.remove(annotator)
    with pytest.raises(ConversationError, match="no longer open to you"):
        conversation_message_send(conversation=conversation, text="still here ?")
    assert not conversation.turns.exists()


def test_the_same_pick_in_two_conversations_is_two_preferences(
    annotator: Any, tiny_base: BaseModelVersion
) -> None:
    """Two conversations of one annotator that say the same and get the same
    two answers (as the worker stores them: one row per prompt, text and
    version): each turn has its own prompt, pair and preference, and the
    second pick is recorded, not folded into the first."""
    from models_hub.services.generation import model_completion_store

    campaign = _campaign()
    turns = []
    for _ in range(2):
        conversation = conversation_start(campaign=campaign, annotator=annotator)
        turn = conversation_message_send(conversation=conversation, text="hi")
        ConversationTurn.objects.filter(pk=turn.pk).update(attempt=turn.attempt + 1)
        answers = [
            model_completion_store(
                prompt=turn.prompt,
                text=text,
                adapter=None,
                base=tiny_base,
                generation={},
            )
            for text in ("Hello!", "Go away.")
        ]
        ConversationTurn.objects.filter(pk=turn.pk).update(
            completion_a=answers[0],
            completion_b=answers[1],
            status=ConversationTurn.Status.READY,
        )
        turns.append(ConversationTurn.objects.get(pk=turn.pk))
    assert turns[0].prompt_id != turns[1].prompt_id
    assert turns[0].prompt.messages == turns[1].prompt.messages

    for turn, side in zip(turns, ("left", "right"), strict=True):
        conversation_turn_choose(turn=turn, annotator=annotator, choice=side)
    preferences = Preference.objects.filter(annotator=annotator).order_by("id")
    assert preferences.count() == 2
    for turn, preference in zip(turns, preferences, strict=True):
        turn.refresh_from_db()
        assert turn.preference_id == preference.pk
        chosen_a = preference.choice == "a"
        assert turn.chosen_id == (
            turn.completion_a_id if chosen_a else turn.completion_b_id
        )
