"""Campaign pages: the campaign page, create and edit, and the import upload
(plain POST and htmx)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from labeling.models import Campaign, Comparison, Completion, Prompt
from tests.labeling.factories import CampaignFactory, PromptFactory, make_pairs


@pytest.fixture
def client_for(make_user: Any) -> Any:
    def make(role: str) -> Client:
        client = Client()
        client.force_login(make_user(role))
        return client

    return make


def _jsonl(rows: list[dict[str, Any]], *, prefix: bytes = b"") -> SimpleUploadedFile:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return SimpleUploadedFile("rows.jsonl", prefix + body.encode())


def _counts(campaign: Campaign) -> tuple[int, int, int]:
    return (
        Prompt.objects.filter(campaign=campaign).count(),
        Completion.objects.filter(prompt__campaign=campaign).count(),
        Comparison.objects.filter(campaign=campaign).count(),
    )


ROWS = [
    {"prompt": "Größe?", "completions": ["groß", "klein", "mittel"], "golden": True},
    {"prompt": "Prompt for the pool only"},
]


# ------------------------------------------------------------------ the campaign page


@pytest.mark.django_db
def test_campaign_page_roles(client_for: Any) -> None:
    """An annotator gets 403, a visitor the login page, a reviewer the page
    without edit or import, an admin the page with both."""
    campaign = CampaignFactory(guidelines="Pick the **better** answer.")
    url = reverse("labeling:campaign-detail", args=[campaign.pk])
    edit = reverse("labeling:campaign-edit", args=[campaign.pk])
    importer = reverse("labeling:campaign-import", args=[campaign.pk])

    denied = client_for(ANNOTATOR).get(url)
    assert (
        denied.status_code == 403 and b"You need the reviewer role." in denied.content
    )
    visitor = Client().get(url)
    assert visitor.status_code == 302
    assert visitor["Location"].startswith(reverse("login") + "?next=")

    reviewer = client_for(REVIEWER).get(url)
    html = reviewer.content.decode()
    assert reviewer.status_code == 200
    assert "<strong>better</strong>" in html
    assert reverse("labeling:campaign-quality", args=[campaign.pk]) in html
    assert reverse("models_hub:leaderboard", args=[campaign.pk]) in html
    assert reverse("labeling:label-start", args=[campaign.pk]) in html
    assert edit not in html and importer not in html and "import.js" not in html
    # The loop's pages are one click away; only admins start a bootstrap round.
    bootstrap = reverse("models_hub:campaign-bootstrap", args=[campaign.pk])
    for page in ("training:campaign-loop", "training:campaign-settings"):
        assert reverse(page, args=[campaign.pk]) in html
    assert bootstrap not in html

    admin = client_for(ADMIN).get(url)
    html = admin.content.decode()
    assert edit in html and importer in html and bootstrap in html
    assert 'hx-encoding="multipart/form-data"' in html and "<progress" in html
    assert "labeling/import.js" in html


@pytest.mark.django_db
def test_campaign_page_counts_prompts_by_split_pairs_and_labels(
    client_for: Any, django_assert_max_num_queries: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    PromptFactory(campaign=campaign, is_golden=True)
    Comparison.objects.filter(pk=campaign.comparisons.first().pk).update(
        status=Comparison.Status.COMPLETE
    )
    from labeling.selectors.campaigns import campaign_counts

    with django_assert_max_num_queries(4):
        counts = campaign_counts(campaign=campaign)
    assert counts["prompts"] == 4 and counts["prompts_golden"] == 1
    assert sum(counts[f"prompts_{s}"] for s in ("train", "val", "test")) == 4
    assert counts["completions"] == 6
    assert (counts["pairs_open"], counts["pairs_complete"]) == (2, 1)
    assert counts["labels"] == 0
    page = client_for(REVIEWER).get(
        reverse("labeling:campaign-detail", args=[campaign.pk])
    )
    assert page.context["counts"] == counts


@pytest.mark.django_db
def test_campaign_list_links_names_for_reviewers_and_new_campaign_for_admins(
    client_for: Any,
) -> None:
    campaign = CampaignFactory()
    detail = f'href="{reverse("labeling:campaign-detail", args=[campaign.pk])}"'
    new = f'href="{reverse("labeling:campaign-create")}"'
    annotator = client_for(ANNOTATOR).get(reverse("labeling:campaign-list")).content
    assert detail.encode() not in annotator and new.encode() not in annotator
    reviewer = client_for(REVIEWER).get(reverse("labeling:campaign-list")).content
    assert detail.encode() in reviewer and new.encode() not in reviewer
    admin = client_for(ADMIN).get(reverse("labeling:campaign-list")).content
    assert detail.encode() in admin and new.encode() in admin


# ------------------------------------------------------------------ create and edit


@pytest.mark.django_db
def test_create_and_edit_are_for_admins_only(client_for: Any) -> None:
    campaign = CampaignFactory()
    urls = [
        reverse("labeling:campaign-create"),
        reverse("labeling:campaign-edit", args=[campaign.pk]),
    ]
    reviewer = client_for(REVIEWER)
    for url in urls:
        assert reviewer.get(url).status_code == 403
        assert reviewer.post(url, {"name": "x", "status": "active"}).status_code == 403
    assert (
        reviewer.post(
            reverse("labeling:campaign-import", args=[campaign.pk]),
            {"file": _jsonl(ROWS)},
        ).status_code
        == 403
    )
    assert Campaign.objects.count() == 1 and not Prompt.objects.exists()


@pytest.mark.django_db
def test_admin_creates_a_campaign_with_criteria_and_status(client_for: Any) -> None:
    admin = client_for(ADMIN)
    response = admin.post(
        reverse("labeling:campaign-create"),
        {
            "name": "Support answers",
            "description": "Customer support",
            "guidelines": "Prefer **correct** answers.",
            "criteria": '[{"name": "helpfulness", "description": "Solves it"}]',
            "status": "paused",
        },
    )
    campaign = Campaign.objects.get(name="Support answers")
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "labeling:campaign-detail", args=[campaign.pk]
    )
    assert campaign.status == "paused" and campaign.created_by is not None
    assert campaign.criteria == [{"name": "helpfulness", "description": "Solves it"}]


@pytest.mark.django_db
def test_duplicate_name_is_a_field_error(client_for: Any) -> None:
    CampaignFactory(name="Taken")
    admin = client_for(ADMIN)
    empty = admin.post(reverse("labeling:campaign-create"), {})
    assert empty.status_code == 400
    assert set(empty.context["form"].errors) == {"name", "status"}
    response = admin.post(
        reverse("labeling:campaign-create"), {"name": "Taken", "status": "active"}
    )
    assert response.status_code == 400
    assert "already exists" in " ".join(response.context["form"].errors["name"])
    assert b'data-field-error="name"' in response.content
    assert Campaign.objects.filter(name="Taken").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ("[{name: 1}", "Not valid JSON"),
        ('{"name": "x"}', "Expected a JSON list"),
        ('[{"name": "a"}, {"name": "a"}]', "appears twice"),
        ('[{"description": "no name"}]', 'needs a "name"'),
        ('[{"name": "nul\\u0000"}]', "NUL character"),
        ("[" * 100_000, "Ensure this value has at most"),
        ("[" * 5_000 + "]" * 5_000, "Nested too deeply"),
    ],
)
def test_invalid_criteria_is_a_field_error_and_writes_nothing(
    client_for: Any, criteria: str, message: str
) -> None:
    """Bad JSON, the wrong shape, a repeated name or a NUL: an error under
    the criteria field, never a 500, nothing saved."""
    response = client_for(ADMIN).post(
        reverse("labeling:campaign-create"),
        {"name": "Criteria test", "status": "active", "criteria": criteria},
    )
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors["criteria"])
    assert not Campaign.objects.filter(name="Criteria test").exists()


@pytest.mark.django_db
def test_admin_edits_a_campaign_and_a_bad_edit_changes_nothing(
    client_for: Any,
) -> None:
    CampaignFactory(name="Other")
    campaign = CampaignFactory(name="Before", criteria=[{"name": "tone"}])
    admin = client_for(ADMIN)
    url = reverse("labeling:campaign-edit", args=[campaign.pk])
    form = admin.get(url)
    assert form.status_code == 200
    assert form.context["form"].initial["name"] == "Before"
    assert '"tone"' in form.context["form"].initial["criteria"]

    taken = admin.post(url, {"name": "Other", "status": "archived"})
    assert taken.status_code == 400 and "name" in taken.context["form"].errors
    assert b'Edit <span class="muted">Before</span>' in taken.content
    campaign.refresh_from_db()
    assert (campaign.name, campaign.status) == ("Before", "active")

    saved = admin.post(
        url,
        {"name": "After", "status": "archived", "guidelines": "New", "criteria": ""},
    )
    assert saved.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.status, campaign.guidelines) == (
        "After",
        "archived",
        "New",
    )
    assert campaign.criteria == []


# ------------------------------------------------------------------ import


@pytest.mark.django_db
def test_plain_post_import_with_a_bom_redirects_and_reports_what_was_created(
    client_for: Any,
) -> None:
    """Without JavaScript: multipart POST, redirect to the campaign page,
    which shows the counts of what was created. A UTF-8 BOM is accepted."""
    campaign = CampaignFactory()
    admin = client_for(ADMIN)
    response = admin.post(
        reverse("labeling:campaign-import", args=[campaign.pk]),
        {"file": _jsonl(ROWS, prefix=b"\xef\xbb\xbf")},
        follow=True,
    )
    assert response.redirect_chain == [
        (reverse("labeling:campaign-detail", args=[campaign.pk]), 302)
    ]
    assert "2 prompts, 3 completions and 3 pairs created" in response.content.decode()
    assert _counts(campaign) == (2, 3, 3)
    assert Prompt.objects.get(campaign=campaign, is_golden=True).text == "Größe?"


@pytest.mark.django_db
def test_htmx_import_returns_the_card_and_the_counts_out_of_band(
    client_for: Any,
) -> None:
    campaign = CampaignFactory()
    response = client_for(ADMIN).post(
        reverse("labeling:campaign-import", args=[campaign.pk]),
        {"file": _jsonl(ROWS, prefix=b"\xef\xbb\xbf")},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="campaign-import"')
    assert "<html" not in html and "<nav" not in html
    assert "2 prompts, 3 completions and 3 pairs created" in html
    assert '<section id="campaign-counts" class="card" hx-swap-oob="true">' in html
    assert _counts(campaign) == (2, 3, 3)


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [False, True])
def test_a_bad_line_names_line_and_field_and_imports_nothing(
    client_for: Any, htmx: bool
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    before = _counts(campaign)
    rows = [*ROWS, {"prompt": "p", "completions": ["a", 3]}]
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = client_for(ADMIN).post(
        reverse("labeling:campaign-import", args=[campaign.pk]),
        {"file": _jsonl(rows)},
        **headers,
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "Line 3, field completions[1]: must be a string" in html
    assert "Nothing was imported." in html
    assert ("<html" in html) is not htmx
    assert "hx-swap-oob" not in html
    assert _counts(campaign) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n',
            "Line 2, field (line): is not valid UTF-8",
        ),
        ('{"prompt": "x"}\n'.encode("utf-16"), "UTF-16"),
        (
            b'{"prompt": "p", "metadata": {"k": "\\u0000"}}\n',
            "field metadata: contains a NUL",
        ),
        (b'{"prompt": "p", "priority": NaN}\n', "NaN is not a JSON number"),
        (b"[" * 100_000 + b"\n", "Line 1, field (line)"),
        (b"\n\n", "contains no JSON lines"),
    ],
)
def test_import_errors_are_shown_never_a_500(
    client_for: Any, body: bytes, message: str
) -> None:
    campaign = CampaignFactory()
    response = client_for(ADMIN).post(
        reverse("labeling:campaign-import", args=[campaign.pk]),
        {"file": SimpleUploadedFile("f.jsonl", body)},
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert _counts(campaign) == (0, 0, 0)


@pytest.mark.django_db
def test_import_refuses_a_file_over_the_limit_and_a_missing_file(
    client_for: Any, settings: Any
) -> None:
    settings.ARBITER_IMPORT_MAX_BYTES = 100
    campaign = CampaignFactory()
    url = reverse("labeling:campaign-import", args=[campaign.pk])
    admin = client_for(ADMIN)
    big = admin.post(url, {"file": _jsonl([{"prompt": "p" * 200}])})
    assert big.status_code == 400
    assert "the limit is 100\xa0bytes" in big.content.decode()
    empty = admin.post(url, {})
    assert (
        empty.status_code == 400 and "This field is required." in empty.content.decode()
    )
    assert admin.get(url).status_code == 405
    assert _counts(campaign) == (0, 0, 0)
