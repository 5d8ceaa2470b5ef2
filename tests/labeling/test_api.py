"""The REST API: roles, blinding, idempotent submit, import and export."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.urls import reverse

from labeling.models import Campaign, Comparison, Completion, Preference, Prompt
from labeling.services.queue import comparison_lease_next
from tests.labeling.factories import CampaignFactory, make_pairs

ANON, ANNOTATOR, REVIEWER, ADMIN = "anon", "annotator", "reviewer", "admin"


def _jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    buffer = io.BytesIO("\n".join(json.dumps(r) for r in rows).encode())
    buffer.name = "data.jsonl"
    return buffer


@pytest.fixture
def clients(make_user: Any, api_client_for: Any) -> dict[str, Any]:
    users = {role: make_user(role) for role in (ANNOTATOR, REVIEWER, ADMIN)}
    clients = {role: api_client_for(user) for role, user in users.items()}
    clients[ANON] = api_client_for(None)
    clients["users"] = users
    return clients


# (method, url name, needs campaign, allowed roles). Every endpoint is listed.
MATRIX = [
    ("get", "api-me", False, {ANNOTATOR, REVIEWER, ADMIN}),
    ("get", "api-campaign-list", False, {ANNOTATOR, REVIEWER, ADMIN}),
    ("post", "api-campaign-list", False, {ADMIN}),
    ("get", "api-campaign-detail", True, {ANNOTATOR, REVIEWER, ADMIN}),
    ("patch", "api-campaign-detail", True, {ADMIN}),
    ("post", "api-campaign-import", True, {ADMIN}),
    ("post", "api-comparison-next", True, {ANNOTATOR, REVIEWER, ADMIN}),
    ("get", "api-campaign-stats", True, {ANNOTATOR, REVIEWER, ADMIN}),
    ("get", "api-preference-export", True, {REVIEWER, ADMIN}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "name", "needs_campaign", "allowed"), MATRIX)
def test_role_matrix(
    clients: dict[str, Any],
    method: str,
    name: str,
    needs_campaign: bool,
    allowed: set[str],
) -> None:
    """Each endpoint answers its roles and refuses the others with 401/403."""
    campaign = CampaignFactory()
    make_pairs(campaign, 3)
    url = reverse(name, args=[campaign.pk] if needs_campaign else [])
    payloads = {
        "api-campaign-list": {"name": "New campaign"},
        "api-campaign-detail": {"description": "edited"},
        "api-campaign-import": {
            "file": _jsonl([{"prompt": "p", "completions": ["x", "y"]}])
        },
    }
    for role in (ANON, ANNOTATOR, REVIEWER, ADMIN):
        payload = payloads.get(name)
        if name == "api-campaign-import":
            payload = {
                "file": _jsonl([{"prompt": f"p-{role}", "completions": ["x", "y"]}])
            }
            response = getattr(clients[role], method)(url, payload, format="multipart")
        elif name == "api-campaign-list" and method == "post":
            response = getattr(clients[role], method)(
                url, {"name": f"New {role}"}, format="json"
            )
        else:
            response = getattr(clients[role], method)(url, payload, format="json")
        if role == ANON:
            assert response.status_code == 401, (role, response.content)
        elif role in allowed:
            assert response.status_code in (200, 201, 204), (
                role,
                response.status_code,
                response.content,
            )
        else:
            assert response.status_code == 403, (
                role,
                response.status_code,
                response.content,
            )
            assert "detail" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api-preference-create", "api-lease-skip"])
def test_lease_endpoints_are_scoped_to_the_lease_holder(
    clients: dict[str, Any], make_user: Any, name: str
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    lease = comparison_lease_next(
        campaign=campaign, annotator=clients["users"][ANNOTATOR]
    )
    url = reverse(name, args=[lease.pk])
    assert clients[ANON].post(url, {"choice": "left"}, format="json").status_code == 401
    for role in (REVIEWER, ADMIN):
        response = clients[role].post(url, {"choice": "left"}, format="json")
        assert response.status_code == 404, response.content
    assert clients[ANNOTATOR].post(
        url, {"choice": "left"}, format="json"
    ).status_code in (201, 204)


@pytest.mark.django_db
def test_annotator_never_sees_which_model_wrote_a_side(clients: dict[str, Any]) -> None:
    campaign = CampaignFactory()
    comparison = make_pairs(campaign, 1)[0]
    Completion.objects.filter(
        pk__in=[comparison.completion_a_id, comparison.completion_b_id]
    ).update(source_label="secret-model-xyz")
    response = clients[ANNOTATOR].post(
        reverse("api-comparison-next", args=[campaign.pk])
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "secret-model-xyz" not in body
    assert set(response.json()) == {
        "lease_id",
        "campaign_id",
        "prompt",
        "is_chat",
        "left",
        "right",
        "expires_at",
    }


@pytest.mark.django_db
def test_annotator_stats_show_only_their_own_progress(clients: dict[str, Any]) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    annotator_view = (
        clients[ANNOTATOR].get(reverse("api-campaign-stats", args=[campaign.pk])).json()
    )
    reviewer_view = (
        clients[REVIEWER].get(reverse("api-campaign-stats", args=[campaign.pk])).json()
    )
    assert "campaign" not in annotator_view and annotator_view["me"]["pairs_left"] == 2
    assert reviewer_view["campaign"]["comparisons_open"] == 2


@pytest.mark.django_db
def test_next_then_submit_round_trip_and_idempotent_retry(
    clients: dict[str, Any],
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 2)
    client = clients[ANNOTATOR]
    pair = client.post(reverse("api-comparison-next", args=[campaign.pk])).json()
    url = reverse("api-preference-create", args=[pair["lease_id"]])
    body = {
        "choice": "left",
        "strength": -2,
        "rationale": "more precise",
        "client_request_id": "abc",
    }
    first = client.post(url, body, format="json")
    retry = client.post(url, body, format="json")
    assert first.status_code == 201 and retry.status_code == 200
    assert first.json()["preference_id"] == retry.json()["preference_id"]
    assert first.json()["choice"] == "left"
    assert Preference.objects.count() == 1
    pref = Preference.objects.get()
    assert pref.rationale == "more precise"


@pytest.mark.django_db
def test_next_answers_204_when_nothing_is_left(clients: dict[str, Any]) -> None:
    campaign = CampaignFactory()
    response = clients[ANNOTATOR].post(
        reverse("api-comparison-next", args=[campaign.pk])
    )
    assert response.status_code == 204


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"choice": "up"}, "choice"),
        ({"choice": "left", "strength": 7}, "strength"),
        ({"choice": "left", "rationale": "x" * 1001}, "rationale"),
        ({"choice": "left", "criteria": {"nonexistent": "left"}}, "criteria"),
        ({}, "choice"),
    ],
)
def test_bad_submit_is_a_400_with_a_reason_and_writes_nothing(
    clients: dict[str, Any], body: dict[str, Any], fragment: str
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    pair = (
        clients[ANNOTATOR]
        .post(reverse("api-comparison-next", args=[campaign.pk]))
        .json()
    )
    response = clients[ANNOTATOR].post(
        reverse("api-preference-create", args=[pair["lease_id"]]), body, format="json"
    )
    assert response.status_code == 400
    assert fragment in json.dumps(response.json())
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_unknown_ids_are_404_not_500(clients: dict[str, Any]) -> None:
    client = clients[ADMIN]
    assert client.get(reverse("api-campaign-detail", args=[999999])).status_code == 403
    assert (
        client.post(
            reverse("api-preference-create", args=[999999]),
            {"choice": "left"},
            format="json",
        ).status_code
        == 404
    )
    assert (
        client.post(
            reverse("api-campaign-list"), "not json", content_type="application/json"
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_import_creates_prompts_completions_and_pairs(clients: dict[str, Any]) -> None:
    campaign = CampaignFactory()
    rows = [
        {
            "prompt": "What is 2+2?",
            "completions": ["4", "5", {"text": "four", "source": "w"}],
            "golden": True,
        },
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "completions": ["Hello!", "Go away."],
        },
        {"prompt": "Prompt for the generation pool only"},
    ]
    url = reverse("api-campaign-import", args=[campaign.pk])
    response = clients[ADMIN].post(url, {"file": _jsonl(rows)}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json() == {
        "lines": 3,
        "prompts_created": 3,
        "completions_created": 5,
        "comparisons_created": 4,
        "duplicates_skipped": 0,
    }
    assert Prompt.objects.filter(campaign=campaign, is_golden=True).count() == 1
    assert Prompt.objects.get(campaign=campaign, text="").messages == [
        {"role": "user", "content": "Hi"}
    ]
    again = clients[ADMIN].post(url, {"file": _jsonl(rows)}, format="multipart")
    assert (
        again.json()["comparisons_created"] == 0
        and again.json()["duplicates_skipped"] == 4
    )
    assert Comparison.objects.filter(campaign=campaign).count() == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_line", "field"),
    [
        ("{not json", "(line)"),
        (json.dumps({"prompt": "", "completions": ["a", "b"]}), "prompt"),
        (json.dumps({"prompt": "p", "completions": ["a"]}), "completions"),
        (json.dumps({"prompt": "p", "completions": ["a", 3]}), "completions[1]"),
        (json.dumps({"prompt": "p", "completions": ["a", "b"], "colour": 1}), "colour"),
        (
            json.dumps(
                {
                    "prompt": [{"role": "robot", "content": "x"}],
                    "completions": ["a", "b"],
                }
            ),
            "prompt[0].role",
        ),
        (
            json.dumps({"prompt": "p", "completions": ["a", "x" * 20_001]}),
            "completions[1].text",
        ),
    ],
)
def test_import_with_one_bad_line_imports_nothing_and_names_line_and_field(
    clients: dict[str, Any], bad_line: str, field: str
) -> None:
    campaign = CampaignFactory()
    good = json.dumps({"prompt": "fine", "completions": ["a", "b"]})
    payload = io.BytesIO(
        f"{good}\n{good.replace('fine', 'also fine')}\n{bad_line}\n".encode()
    )
    payload.name = "bad.jsonl"
    response = clients[ADMIN].post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": payload},
        format="multipart",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["line"] == 3 and body["field"] == field
    assert body["detail"].startswith(f"line 3: {field}:")
    assert not Prompt.objects.filter(campaign=campaign).exists()
    assert not Completion.objects.exists()


@pytest.mark.django_db
def test_import_refuses_files_over_the_size_limit(
    clients: dict[str, Any], settings: Any
) -> None:
    settings.ARBITER_IMPORT_MAX_BYTES = 100
    campaign = CampaignFactory()
    payload = _jsonl([{"prompt": "p" * 200, "completions": ["a", "b"]}])
    response = clients[ADMIN].post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": payload},
        format="multipart",
    )
    assert response.status_code == 400
    assert "limit is 100" in response.json()["detail"]
    assert not Prompt.objects.exists()


@pytest.mark.django_db
def test_campaign_create_validates_input(clients: dict[str, Any]) -> None:
    url = reverse("api-campaign-list")
    bad = clients[ADMIN].post(url, {"name": "x", "overlap_k": 0}, format="json")
    assert bad.status_code == 400 and "overlap_k" in bad.json()
    dup_criteria = clients[ADMIN].post(
        url, {"name": "y", "criteria": [{"name": "a"}, {"name": "a"}]}, format="json"
    )
    assert (
        dup_criteria.status_code == 400
        and "appears twice" in dup_criteria.json()["detail"]
    )
    ok = clients[ADMIN].post(
        url,
        {"name": "z", "overlap_k": 3, "criteria": [{"name": "helpful"}]},
        format="json",
    )
    assert ok.status_code == 201
    assert Campaign.objects.get(name="z").overlap_k == 3
    assert not Campaign.objects.filter(name__in=["x", "y"]).exists()


def _label_everything(campaign: Campaign, users: list[Any], choices: list[str]) -> None:
    from labeling.services.queue import preference_record

    for user, choice in zip(users, choices, strict=True):
        lease = comparison_lease_next(campaign=campaign, annotator=user)
        # A strength must agree with the choice (-1: left, slightly).
        strength = -1 if choice == "left" else None
        preference_record(
            lease_id=lease.pk, annotator=user, choice=choice, strength=strength
        )


@pytest.mark.django_db
def test_export_streams_trl_rows_that_datasets_loads(
    clients: dict[str, Any], make_user: Any, tmp_path: Any
) -> None:
    from datasets import load_dataset

    campaign = CampaignFactory(overlap_k=1)
    plain = make_pairs(campaign, 2)
    chat = make_pairs(campaign, 1)[0]
    chat.prompt.text, chat.prompt.messages = "", [{"role": "user", "content": "Hello?"}]
    chat.prompt.save()
    users = [make_user() for _ in range(3)]
    for comparison, user, choice in zip(
        [*plain, chat], users, ["left", "right", "left"], strict=True
    ):
        lease = comparison_lease_next(campaign=campaign, annotator=user)
        assert lease.comparison_id == comparison.pk
        from labeling.services.queue import preference_record

        preference_record(lease_id=lease.pk, annotator=user, choice=choice)

    response = clients[REVIEWER].get(
        reverse("api-preference-export", args=[campaign.pk])
    )
    assert response.status_code == 200 and response.streaming
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b"".join(response.streaming_content))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3
    by_comparison = {r["comparison_id"]: r for r in rows}
    for pref in Preference.objects.select_related(
        "comparison__completion_a", "comparison__completion_b"
    ):
        row = by_comparison[pref.comparison_id]
        winner = (
            pref.comparison.completion_a
            if pref.choice == "a"
            else pref.comparison.completion_b
        )
        chosen = (
            row["chosen"]
            if isinstance(row["chosen"], str)
            else row["chosen"][0]["content"]
        )
        assert chosen == winner.text
        assert row["annotator_id"] == pref.annotator_id
    chat_row = by_comparison[chat.pk]
    assert chat_row["prompt"] == [{"role": "user", "content": "Hello?"}]
    assert chat_row["chosen"][0]["role"] == "assistant"

    plain_path = tmp_path / "plain.jsonl"
    plain_path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows if isinstance(r["prompt"], str))
    )
    dataset = load_dataset("json", data_files=str(plain_path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert dataset.num_rows == 2


@pytest.mark.django_db
def test_export_tie_policy_and_filters(clients: dict[str, Any], make_user: Any) -> None:
    campaign = CampaignFactory(overlap_k=1)
    make_pairs(campaign, 3)
    users = [make_user() for _ in range(3)]
    _label_everything(campaign, users, ["tie", "both_bad", "left"])
    url = reverse("api-preference-export", args=[campaign.pk])

    def rows(query: str) -> list[dict[str, Any]]:
        response = clients[REVIEWER].get(url + query)
        assert response.status_code == 200, response.content
        return [
            json.loads(line)
            for line in b"".join(response.streaming_content).decode().splitlines()
        ]

    assert len(rows("")) == 1  # tie skipped, both-bad never exported
    both = rows("?tie_policy=both_orders")
    assert len(both) == 3 and sum(r["tie"] for r in both) == 2
    assert rows(f"?exclude_annotator={users[2].pk}") == []
    assert clients[REVIEWER].get(url + "?tie_policy=coin").status_code == 400


@pytest.mark.django_db
def test_openapi_schema_is_served_and_names_every_endpoint(
    clients: dict[str, Any],
) -> None:
    response = clients[ANNOTATOR].get(reverse("api-schema"), {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for expected in (
        "/api/v1/campaigns/",
        "/api/v1/campaigns/{campaign_id}/next/",
        "/api/v1/leases/{lease_id}/preference/",
    ):
        assert expected in paths


@pytest.mark.django_db
def test_import_accepts_a_utf8_byte_order_mark(clients: dict[str, Any]) -> None:
    """A file saved "UTF-8 with BOM" imports like the same file without it."""
    campaign = CampaignFactory()
    line = json.dumps({"prompt": "Größe?", "completions": ["groß", "klein"]})
    payload = io.BytesIO(b"\xef\xbb\xbf" + f"{line}\n".encode())
    payload.name = "bom.jsonl"
    response = clients[ADMIN].post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": payload},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert Prompt.objects.get(campaign=campaign).content == "Größe?"


# ---------------------------------------------------------------- changing a label


def _answered_via_api(client: Any, campaign: Campaign) -> dict[str, Any]:
    pair = client.post(reverse("api-comparison-next", args=[campaign.pk])).json()
    return client.post(
        reverse("api-preference-create", args=[pair["lease_id"]]),
        {"choice": "left", "strength": -1},
        format="json",
    ).json()


@pytest.mark.django_db
def test_submit_with_a_contradicting_strength_is_a_400_and_writes_nothing(
    clients: dict[str, Any],
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    client = clients[ANNOTATOR]
    pair = client.post(reverse("api-comparison-next", args=[campaign.pk])).json()
    response = client.post(
        reverse("api-preference-create", args=[pair["lease_id"]]),
        {"choice": "left", "strength": 3},
        format="json",
    )
    assert response.status_code == 400
    assert "right is better but the choice is left" in response.json()["detail"]
    assert response.json()["field"] == "strength"
    assert not Preference.objects.exists()


@pytest.mark.django_db
def test_patch_changes_the_label_as_a_new_version(clients: dict[str, Any]) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    client = clients[ANNOTATOR]
    created = _answered_via_api(client, campaign)
    url = reverse("api-preference-revise", args=[created["preference_id"]])

    response = client.patch(
        url, {"choice": "right", "strength": 2, "rationale": "misread"}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["version"], body["choice"], body["strength"], body["rationale"]) == (
        2,
        "right",
        2,
        "misread",
    )
    pref = Preference.objects.get()
    assert pref.version == 2 and pref.choice == ("b" if pref.a_on_left else "a")
    assert pref.revisions.get().choice == ("a" if pref.a_on_left else "b")


@pytest.mark.django_db
def test_patch_refusals_are_4xx_with_a_reason(
    clients: dict[str, Any], make_user: Any, api_client_for: Any
) -> None:
    campaign = CampaignFactory()
    make_pairs(campaign, 1)
    client = clients[ANNOTATOR]
    created = _answered_via_api(client, campaign)
    url = reverse("api-preference-revise", args=[created["preference_id"]])

    contradiction = client.patch(url, {"choice": "right"}, format="json")
    assert contradiction.status_code == 400
    assert "strength" in contradiction.json()["detail"]

    other = api_client_for(make_user("annotator"))
    assert other.patch(url, {"choice": "tie"}, format="json").status_code == 404
    assert clients[ANON].patch(url, {"choice": "tie"}, format="json").status_code in (
        401,
        403,
    )
    missing = reverse("api-preference-revise", args=[999_999])
    assert client.patch(missing, {"choice": "tie"}, format="json").status_code == 404

    Campaign.objects.filter(pk=campaign.pk).update(label_edit_minutes=0)
    final = client.patch(url, {"choice": "tie", "strength": None}, format="json")
    assert final.status_code == 409
    assert "cannot be changed" in final.json()["detail"]
    assert Preference.objects.get().version == 1


@pytest.mark.django_db
def test_import_refuses_byte_identical_completions_naming_the_line(
    clients: dict[str, Any],
) -> None:
    """Two sources wrote the same text: such a pair would be a coin toss for
    annotators, so the import names the line and imports nothing."""
    campaign = CampaignFactory()
    rows = [
        {"prompt": "Say hi", "completions": ["Hi!", "Hello there."]},
        {
            "prompt": "Say bye",
            "completions": [
                {"text": "Bye.", "source": "model-a"},
                {"text": "Bye.", "source": "model-b"},
            ],
        },
    ]
    response = clients[ADMIN].post(
        reverse("api-campaign-import", args=[campaign.pk]),
        {"file": _jsonl(rows)},
        format="multipart",
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["line"], body["field"]) == (2, "completions[1].text")
    assert "byte-identical to completions[0]" in body["detail"]
    assert not Comparison.objects.exists() and not Prompt.objects.exists()
