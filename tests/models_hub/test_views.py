"""Reviewer pages of the model hub."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Completion, Lease, Preference
from models_hub.models import BaseModelVersion, GenerationJob
from models_hub.services.generation import generation_job_launch
from models_hub.services.registry import adapter_register
from tests.conftest import PASSWORD
from tests.labeling.factories import CampaignFactory, PromptFactory, make_pairs


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def two_versions(db: None) -> dict[str, Any]:
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(name="tiny", source="/m")
    adapter = adapter_register(
        campaign=campaign,
        base_model=base,
        method="dpo",
        peft_type="lora",
        storage_path="x",
        metrics={},
    )
    prompt = PromptFactory(campaign=campaign, is_golden=True, text="Name a colour.")
    Completion.objects.create(
        prompt=prompt,
        text="The colour is blue today",
        content_hash="1",
        origin="model",
        adapter=adapter,
        base_model=base,
        source_label="adapter",
        metadata={"reward_score": 1.25},
    )
    Completion.objects.create(
        prompt=prompt,
        text="The colour is red today",
        content_hash="2",
        origin="model",
        base_model=base,
        source_label="base",
    )
    return {
        "campaign": campaign,
        "adapter": adapter,
        "base": base,
        "left": f"adapter:{adapter.pk}",
        "right": f"base:{base.pk}",
    }


@pytest.mark.django_db
def test_side_by_side_shows_both_outputs_with_a_word_diff_and_reward(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    client = _client(make_user(REVIEWER))
    url = reverse("models_hub:compare", args=[two_versions["campaign"].pk])
    html = client.get(
        url, {"left": two_versions["left"], "right": two_versions["right"]}
    ).content.decode()
    assert "<del>blue</del>" in html and "<ins>red</ins>" in html
    assert "reward 1.250" in html and "no labels yet" in html


@pytest.mark.django_db
def test_blind_votes_hide_the_versions_and_count_as_labels(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    reviewer = make_user(REVIEWER)
    client = _client(reviewer)
    url = reverse("models_hub:blind-review", args=[two_versions["campaign"].pk])
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    assert "Start blind review" in client.get(url + query).content.decode()
    page = client.post(url + query)
    html = page.content.decode()
    assert page.status_code == 200 and "Left is better" in html
    assert "dpo-v1" not in html and "tiny" not in html
    lease = page.context["pair"].lease_id
    after = client.post(url + query, {"lease": lease, "choice": "left"})
    pref = Preference.objects.get(annotator=reviewer)
    assert pref.source == "reviewer"
    assert "You have judged every" in after.content.decode()


@pytest.mark.django_db
def test_blind_review_leases_a_plain_pair_even_where_a_ranking_holds_the_two(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """The two versions' answers are also items of a ranked comparison (and
    so of one of its implied pairs, which the queue never leases): the blind
    review creates and leases a plain pair of its own."""
    from labeling.services.ranking import ranked_comparison_create

    campaign = two_versions["campaign"]
    prompt = campaign.prompts.get()
    third = Completion.objects.create(
        prompt=prompt, text="Green.", content_hash="3", origin="import"
    )
    ranked = ranked_comparison_create(
        campaign=campaign, prompt=prompt, completions=[*prompt.completions.all()]
    )
    assert ranked.is_ranked and ranked.items.filter(completion=third).exists()
    reviewer = make_user(REVIEWER)
    client = _client(reviewer)
    url = reverse("models_hub:blind-review", args=[campaign.pk])
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    lease = Lease.objects.get(pk=client.post(url + query).context["pair"].lease_id)
    assert not lease.comparison.is_ranked and lease.comparison.parent is None
    assert lease.comparison.pk != ranked.pk


@pytest.mark.django_db
def test_model_pages_are_for_reviewers_and_actions_for_admins(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    annotator = _client(make_user(ANNOTATOR))
    assert annotator.get(reverse("models_hub:adapter-list")).status_code == 403
    reviewer = _client(make_user(REVIEWER))
    listing = reviewer.get(reverse("models_hub:adapter-list"))
    assert listing.status_code == 200 and b"dpo-v1" in listing.content
    assert (
        reviewer.get(
            reverse("models_hub:leaderboard", args=[two_versions["campaign"].pk])
        ).status_code
        == 200
    )
    promote = reverse(
        "models_hub:adapter-action", args=[two_versions["adapter"].pk, "promote"]
    )
    assert reviewer.post(promote).status_code == 403
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "candidate"
    admin = _client(make_user(ADMIN))
    refused = admin.post(promote, follow=True)
    assert b"gate needs" in refused.content
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "candidate"
    admin.post(promote, {"override": "1", "reason": "reviewed by hand"})
    two_versions["adapter"].refresh_from_db()
    assert two_versions["adapter"].status == "champion"


@pytest.mark.django_db
def test_one_version_on_both_sides_is_refused_with_a_message(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """Side by side and blind mode both refuse to compare a version with
    itself (400 and a message, never a 500), and write nothing."""
    client = _client(make_user(REVIEWER))
    campaign = two_versions["campaign"].pk
    compare = reverse("models_hub:compare", args=[campaign])
    blind = reverse("models_hub:blind-review", args=[campaign])
    generate = reverse("models_hub:compare-generate", args=[campaign])
    for key in (two_versions["left"], two_versions["right"]):
        query = f"?left={key}&right={key}"
        for response in (
            client.get(compare + query),
            client.get(blind + query),
            client.post(blind + query),
            client.post(generate, {"left": key, "right": key}),
        ):
            assert response.status_code == 400
            assert b"Pick two different versions" in response.content
    assert not Lease.objects.exists()


@pytest.mark.django_db
def test_malformed_blind_and_generate_posts_are_400_not_500(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """``lease=abc`` on a blind vote and a generate without versions answer
    400 with a reason; nothing is leased, recorded or queued."""
    client = _client(make_user(REVIEWER))
    campaign = two_versions["campaign"].pk
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    blind = reverse("models_hub:blind-review", args=[campaign]) + query
    response = client.post(blind, {"lease": "abc", "choice": "left"})
    assert response.status_code == 400 and b"not a lease id" in response.content
    generate = reverse("models_hub:compare-generate", args=[campaign])
    for data, reason in (
        ({}, b"Pick a model version."),
        ({"left": two_versions["left"]}, b"Pick a model version."),
        ({"left": "x", "right": "y"}, b"not a model version"),
    ):
        response = client.post(generate, data)
        assert response.status_code == 400
        assert reason in response.content
    assert not Lease.objects.exists() and not Preference.objects.exists()
    huge = client.post(blind, {"lease": "9" * 30, "choice": "left"})
    assert huge.status_code == 200 and not Preference.objects.exists()


@pytest.mark.django_db
def test_unknown_adapter_actions_are_404_and_next_never_leaves_the_site(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """An unknown action is a 404 (was NoReverseMatch → 500); ``next`` is
    followed only when it points to this site."""
    admin = _client(make_user(ADMIN))
    adapter = two_versions["adapter"]
    unknown = reverse("models_hub:adapter-action", args=[adapter.pk, "explode"])
    assert admin.post(unknown, {"next": "javascript:alert(1)"}).status_code == 404
    retire = reverse("models_hub:adapter-action", args=[adapter.pk, "retire"])
    listing = reverse("models_hub:adapter-list")
    for evil in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = admin.post(retire, {"next": evil})
        assert response.status_code == 302 and response["Location"] == listing
    leaderboard = reverse("models_hub:leaderboard", args=[adapter.campaign_id])
    response = admin.post(retire, {"next": leaderboard})
    assert response["Location"] == leaderboard
    adapter.refresh_from_db()
    assert adapter.status == "retired"


# ---------------------------------------------------------------- generation jobs

POLL = 'hx-trigger="load delay:2s"'
FIGURES = {
    "n": 12,
    "degenerate": 0.25,
    "repetition_mean": 0.4,
    "distinct_1": 0.5,
    "distinct_2": 0.61,
    "empty": 0.0,
    "truncated": 0.5,
    "length_mean": 900.0,
    "length_median": 850.0,
    "length_p90": 1400.0,
    "nll_under_base": 3.5,
}
GUARDRAILS = {
    "candidate": FIGURES,
    "opponent": {**FIGURES, "degenerate": 0.0, "length_mean": 300.0},
    "violations": [
        "25% of its outputs are empty or loops against 0% for the opponent "
        "(allowed: 5% more)"
    ],
    "passed": False,
    "opponent_key": "base:1",
}


def _job_set(job: GenerationJob, **fields: Any) -> None:
    """Move a job the way its worker would (no worker runs here)."""
    GenerationJob.objects.filter(pk=job.pk).update(**fields)


@pytest.fixture
def generation(make_user: Any, two_versions: dict[str, Any]) -> dict[str, Any]:
    """A candidate round of the adapter (queued), with clients for an admin
    and a reviewer."""
    job = generation_job_launch(
        campaign=two_versions["campaign"],
        kind=GenerationJob.Kind.CANDIDATE,
        adapter=two_versions["adapter"],
    )
    return {
        "job": job,
        "url": reverse("models_hub:generation-job-detail", args=[job.pk]),
        "admin": _client(make_user(ADMIN)),
        "reviewer": _client(make_user(REVIEWER)),
        **two_versions,
    }


@pytest.mark.django_db
def test_the_generation_job_page_shows_each_state_and_polls_only_while_active(
    generation: dict[str, Any],
) -> None:
    """Queued and running pages poll; finished ones do not. Running shows
    progress, tokens/s, the ETA in minutes and, after 30 s without a
    heartbeat, a warning; failed shows the error; the guardrails table
    compares the candidate with its opponent and says what failed."""
    job, url, admin = generation["job"], generation["url"], generation["admin"]
    queued = admin.get(url).content.decode()
    assert POLL in queued and "queued" in queued and "dpo-v1" in queued
    assert "measured once both versions" in queued

    now = timezone.now()
    _job_set(
        job,
        status="running",
        phase="writing the candidate's answers",
        heartbeat_at=now,
        started_at=now,
        prompts_done=3,
        prompts_total=8,
        new_tokens=1234,
        tokens_per_second=41.5,
        eta_seconds=150,
    )
    running = admin.get(url).content.decode()
    assert POLL in running and "Writing the candidate&#x27;s answers" in running
    assert "<strong>3</strong> / 8" in running and "41.5" in running
    assert "about 3 min left" in running and "1,234" in running
    assert "No heartbeat" not in running
    _job_set(job, eta_seconds=42)
    assert "about 42 s left" in admin.get(url).content.decode()
    _job_set(job, heartbeat_at=now - timedelta(seconds=45))
    stale = admin.get(url).content.decode()
    assert "No heartbeat from the worker for over 30 seconds" in stale
    assert "the sweeper marks the job failed" in stale and POLL in stale

    _job_set(
        job,
        status="succeeded",
        phase="done",
        eta_seconds=0,
        guardrails=GUARDRAILS,
        finished_at=now,
    )
    done = admin.get(url).content.decode()
    assert POLL not in done and " left" not in done and "No heartbeat" not in done
    assert "the candidate against base:1" in done
    for cell in ("25.0%", "0.0%", "0.610", "900", "300", "1400", "3.50"):
        assert f"<td>{cell}</td>" in done, cell
    assert "failed its guardrails" in done and "25% of its outputs" in done

    _job_set(job, status="failed", error="RuntimeError: CUDA out of memory")
    failed = admin.get(url).content.decode()
    assert POLL not in failed and "CUDA out of memory" in failed
    _job_set(job, status="cancelled", error="")
    assert POLL not in admin.get(url).content.decode()


@pytest.mark.django_db
def test_the_status_poll_is_one_fragment_that_drops_the_cancel_box_once_final(
    generation: dict[str, Any],
) -> None:
    """htmx gets the status card alone; while the job can be cancelled the
    confirmation outside the card is left alone, after that it is emptied
    out of band."""
    job, url, admin = generation["job"], generation["url"], generation["admin"]
    fragment = admin.get(url, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<section id="job-status"')
    assert "<html" not in fragment and "hx-swap-oob" not in fragment
    _job_set(job, status="succeeded")
    final = admin.get(url, headers={"HX-Request": "true"}).content.decode()
    assert '<div id="job-cancel" hx-swap-oob="true"></div>' in final
    assert POLL not in final


@pytest.mark.django_db
def test_cancel_is_a_confirmed_admin_post_with_distinct_messages(
    generation: dict[str, Any],
) -> None:
    """Admins get a second-step form that says what cancelling does;
    reviewers see no form and are refused. Cancelling reports success; a
    second cancel reports the job already ended, styled as an error."""
    job, url = generation["job"], generation["url"]
    cancel = reverse("models_hub:generation-job-cancel", args=[job.pk])
    page = generation["admin"].get(url).content.decode()
    assert '<details class="card confirm">' in page and "are kept" in page
    assert f'action="{cancel}"' in page and "onclick" not in page
    assert 'action="' + cancel not in generation["reviewer"].get(url).content.decode()
    assert generation["reviewer"].post(cancel).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"

    done = generation["admin"].post(cancel, follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled"
    html = done.content.decode()
    assert '<li class="success" role="status">' in html
    assert "cancelled before it started" in html and "Cancel this job" not in html
    assert "Cancelled: no further completions will be written." in html
    again = generation["admin"].post(cancel, follow=True).content.decode()
    assert '<li class="error" role="alert">This job has already cancelled.' in again


@pytest.mark.django_db
def test_write_pairs_now_queues_a_bootstrap_job_for_admins_only(
    make_user: Any, generation: dict[str, Any]
) -> None:
    """The list filtered by campaign offers admins the bootstrap button;
    pressing it writes a QUEUED job and opens its page; pressing it again
    while that one is queued, or for a campaign whose prompts all have open
    pairs, says why in an error message and writes nothing."""
    campaign = generation["campaign"]
    PromptFactory(campaign=campaign)
    listing = reverse("models_hub:generation-job-list") + f"?campaign={campaign.pk}"
    bootstrap = reverse("models_hub:campaign-bootstrap", args=[campaign.pk])
    admin, reviewer = generation["admin"], generation["reviewer"]
    assert "Write pairs now" in admin.get(listing).content.decode()
    seen = reviewer.get(listing).content.decode()
    assert "Write pairs now" not in seen and "dpo-v1" in seen
    assert reviewer.post(bootstrap).status_code == 403
    annotator = _client(make_user(ANNOTATOR))
    assert annotator.get(listing).status_code == 403

    response = admin.post(bootstrap)
    job = GenerationJob.objects.get(kind=GenerationJob.Kind.BOOTSTRAP)
    assert job.status == GenerationJob.Status.QUEUED and job.campaign == campaign
    detail = reverse("models_hub:generation-job-detail", args=[job.pk])
    assert response.status_code == 302 and response["Location"] == detail
    twice = admin.post(bootstrap, follow=True).content.decode()
    assert '<li class="error" role="alert">A bootstrap round' in twice
    paired = CampaignFactory()
    make_pairs(paired, 1)
    nothing = admin.post(
        reverse("models_hub:campaign-bootstrap", args=[paired.pk]), follow=True
    ).content.decode()
    assert "already has an open pair" in nothing
    assert GenerationJob.objects.filter(kind="bootstrap").count() == 1


@pytest.mark.django_db
def test_reviewers_find_generation_in_the_nav_and_from_the_model_pages(
    make_user: Any, generation: dict[str, Any]
) -> None:
    campaign = generation["campaign"]
    listing = reverse("models_hub:generation-job-list")
    reviewer_page = generation["reviewer"].get(
        reverse("models_hub:adapter-list") + f"?campaign={campaign.pk}"
    )
    assert f'href="{listing}">Generation</a>' in reviewer_page.content.decode()
    assert f'href="{listing}?campaign={campaign.pk}"' in reviewer_page.content.decode()
    board = generation["reviewer"].get(
        reverse("models_hub:leaderboard", args=[campaign.pk])
    )
    assert f'href="{listing}?campaign={campaign.pk}"' in board.content.decode()
    annotator = _client(make_user(ANNOTATOR))
    home = annotator.get(reverse("labeling:campaign-list")).content.decode()
    assert ">Generation</a>" not in home


@pytest.mark.django_db
def test_the_generation_list_says_each_jobs_phase_and_time_left(
    generation: dict[str, Any],
) -> None:
    job = generation["job"]
    now = timezone.now()
    _job_set(
        job,
        status="running",
        phase="writing the candidate's answers",
        heartbeat_at=now,
        started_at=now,
        eta_seconds=130,
    )
    listing = reverse("models_hub:generation-job-list")
    html = generation["reviewer"].get(listing).content.decode()
    assert "Writing the candidate&#x27;s answers" in html
    assert "about 3 min left" in html and "⚠ silent" not in html
    _job_set(job, eta_seconds=20, heartbeat_at=now - timedelta(seconds=45))
    html = generation["reviewer"].get(listing).content.decode()
    assert "about 20 s left" in html and "⚠ silent" in html


@pytest.mark.django_db
def test_side_by_side_renders_markdown_and_escapes_html(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """Outputs are rendered as markdown, as on the labeling page; HTML a
    model wrote is shown as text, never run. The word diff is kept under
    "Word changes"."""
    Completion.objects.filter(adapter=two_versions["adapter"]).update(
        text="**Blue**, mostly:\n\n- sky\n- sea\n\n<script>alert(1)</script>"
    )
    client = _client(make_user(REVIEWER))
    url = reverse("models_hub:compare", args=[two_versions["campaign"].pk])
    html = client.get(
        url, {"left": two_versions["left"], "right": two_versions["right"]}
    ).content.decode()
    assert "<strong>Blue</strong>" in html and "<li>sky</li>" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<summary>Word changes</summary>" in html and "red today</ins>" in html


@pytest.mark.django_db
def test_versions_without_outputs_say_so_and_offer_to_generate_them(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """With no golden prompt answered by both versions, side by side and
    blind mode (before and after "Start") say "No outputs yet — generate
    them" with the generate button, never "you have judged every pair"; the
    button queues a review generation job."""
    Completion.objects.all().delete()
    client = _client(make_user(REVIEWER))
    campaign = two_versions["campaign"].pk
    query = f"?left={two_versions['left']}&right={two_versions['right']}"
    generate = reverse("models_hub:compare-generate", args=[campaign])
    compare = client.get(reverse("models_hub:compare", args=[campaign]) + query)
    blind_url = reverse("models_hub:blind-review", args=[campaign]) + query
    pages = [compare, client.get(blind_url), client.post(blind_url)]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert "No outputs yet — generate them." in html
        assert f'action="{generate}"' in html and "Generate the outputs" in html
        assert "You have judged every" not in html
        assert "Start blind review" not in html
    assert not Lease.objects.exists()
    queued = client.post(
        generate, {"left": two_versions["left"], "right": two_versions["right"]}
    )
    assert queued.status_code == 302
    assert GenerationJob.objects.filter(kind=GenerationJob.Kind.REVIEW).count() == 1


@pytest.mark.django_db
def test_adapter_actions_confirm_say_what_they_do_and_keep_the_filters(
    make_user: Any, two_versions: dict[str, Any]
) -> None:
    """Promote, retire and merged export each sit behind a <details>
    confirmation that says what happens to the champion and the queue (no
    JavaScript needed); the post carries the filtered list's URL back, and
    success and error messages are styled apart."""
    admin = _client(make_user(ADMIN))
    adapter, campaign = two_versions["adapter"], two_versions["campaign"]
    listing = f"{reverse('models_hub:adapter-list')}?campaign={campaign.pk}"
    page = admin.get(listing).content.decode()
    for action, words in (
        ("promote", "the current champion, if any, becomes a candidate again"),
        ("retire", "The champion does not change; pairs already in the labeling"),
        ("merge", "The champion and the labeling queue do not change"),
    ):
        url = reverse("models_hub:adapter-action", args=[adapter.pk, action])
        block = page[: page.index(f'action="{url}"')]
        block = block[block.rindex("<details") :]
        assert block.startswith('<details class="confirm">'), action
        assert words in block, action
    assert page.count(f'name="next" value="{listing}"') >= 3
    assert "onclick" not in page

    promote = reverse("models_hub:adapter-action", args=[adapter.pk, "promote"])
    refused = admin.post(promote, {"next": listing})
    assert refused["Location"] == listing
    html = admin.get(listing).content.decode()
    assert '<li class="error" role="alert">Not promoted: the gate needs' in html
    admin.post(promote, {"next": listing, "override": "1", "reason": "by hand"})
    html = admin.get(listing).content.decode()
    assert '<li class="success" role="status">' in html
    adapter.refresh_from_db()
    assert adapter.status == "champion"
    page = admin.get(listing).content.decode()
    rollback = reverse("models_hub:adapter-action", args=[adapter.pk, "rollback"])
    block = page[: page.index(f'action="{rollback}"')]
    block = block[block.rindex("<details") :]
    assert "brings back the champion it replaced, or the base model" in block
