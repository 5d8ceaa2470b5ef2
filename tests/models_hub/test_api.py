"""The model hub API: roles, registry actions, leaderboard, downloads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse

from core.roles import ADMIN, ANNOTATOR, REVIEWER
from models_hub.models import Adapter, BaseModelVersion
from models_hub.services.registry import adapter_register
from tests.labeling.factories import CampaignFactory


@pytest.fixture
def setup(make_user: Any, api_client_for: Any) -> dict[str, Any]:
    campaign = CampaignFactory()
    base = BaseModelVersion.objects.create(name="b", source="/models/b")
    folder = Path(settings.STORAGE_ROOT) / "adapters" / f"test-{campaign.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    adapters = [
        adapter_register(
            campaign=campaign,
            base_model=base,
            method="dpo",
            peft_type="lora",
            storage_path=str(folder.relative_to(settings.STORAGE_ROOT)),
            metrics={"eval_accuracy": 0.9},
        )
        for _ in range(2)
    ]
    return {
        "campaign": campaign,
        "adapters": adapters,
        **{
            role: api_client_for(make_user(role))
            for role in (ANNOTATOR, REVIEWER, ADMIN)
        },
    }


@pytest.mark.django_db
def test_annotators_cannot_see_models_and_reviewers_cannot_change_them(
    setup: dict[str, Any],
) -> None:
    v1 = setup["adapters"][0]
    assert setup[ANNOTATOR].get(reverse("api-adapter-list")).status_code == 403
    assert setup[REVIEWER].get(reverse("api-adapter-list")).status_code == 200
    assert (
        setup[REVIEWER].post(reverse("api-adapter-promote", args=[v1.pk])).status_code
        == 403
    )
    assert Adapter.objects.get(pk=v1.pk).status == "candidate"


@pytest.mark.django_db
def test_promote_and_rollback_through_the_api(setup: dict[str, Any]) -> None:
    admin, (v1, v2) = setup[ADMIN], setup["adapters"]
    blocked = admin.post(reverse("api-adapter-promote", args=[v1.pk]))
    assert blocked.status_code == 409 and "gate needs" in blocked.json()["detail"]
    assert blocked.json()["evidence"]["n"] == 0
    override = {"override": True, "reason": "first version, reviewed by hand"}
    assert (
        admin.post(
            reverse("api-adapter-promote", args=[v1.pk]), override, format="json"
        ).json()["status"]
        == "champion"
    )
    assert (
        admin.post(
            reverse("api-adapter-promote", args=[v2.pk]), override, format="json"
        ).status_code
        == 200
    )
    again = admin.post(reverse("api-adapter-promote", args=[v2.pk]))
    assert again.status_code == 409 and "already the champion" in again.json()["detail"]
    back = admin.post(
        reverse("api-champion-rollback", args=[setup["campaign"].pk]),
        {"reason": "worse"},
        format="json",
    )
    assert back.status_code == 200 and back.json()["champion"]["id"] == v1.pk
    events = setup[REVIEWER].get(reverse("api-adapter-events", args=[v1.pk])).json()
    assert [e["action"] for e in events][:2] == ["rolled_back", "promoted"]
    to_base = admin.post(
        reverse("api-champion-rollback", args=[setup["campaign"].pk]),
        {"reason": "back to the base"},
        format="json",
    )
    assert to_base.status_code == 200 and to_base.json() == {"champion": None}


@pytest.mark.django_db
def test_download_is_a_zip_of_the_peft_folder(setup: dict[str, Any]) -> None:
    v1 = setup["adapters"][0]
    response = setup[REVIEWER].get(reverse("api-adapter-download", args=[v1.pk]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == [
        f"{v1.name}/adapter_config.json",
        f"{v1.name}/adapter_model.safetensors",
    ]


@pytest.mark.django_db
def test_unknown_versions_and_adapters_are_404(setup: dict[str, Any]) -> None:
    reviewer = setup[REVIEWER]
    url = reverse("api-compare", args=[setup["campaign"].pk])
    assert (
        reviewer.get(url, {"left": "adapter:999999", "right": "base:1"}).status_code
        == 404
    )
    assert reviewer.get(url, {"left": "nonsense", "right": "x"}).status_code == 400
    assert reviewer.get(reverse("api-adapter-detail", args=[999999])).status_code == 404
    assert (
        reviewer.get(reverse("api-leaderboard", args=[setup["campaign"].pk])).json()[
            "versions"
        ]
        == []
    )


@pytest.mark.django_db
def test_registering_a_base_model_takes_any_id_or_folder(setup: dict[str, Any]) -> None:
    response = setup[ADMIN].post(
        reverse("api-base-model-list"),
        {"name": "Qwen 0.5B", "source": "Qwen/Qwen2.5-0.5B-Instruct"},
        format="json",
    )
    assert response.status_code == 201
    assert BaseModelVersion.objects.filter(source="Qwen/Qwen2.5-0.5B-Instruct").exists()
    names = [
        b["name"] for b in setup[REVIEWER].get(reverse("api-base-model-list")).json()
    ]
    assert "SmolLM2-135M-Instruct" in names


@pytest.mark.django_db
def test_compare_refuses_one_version_on_both_sides_with_a_400(
    setup: dict[str, Any],
) -> None:
    """The same key twice is a 400 that says why (was a 500 from win_rate)."""
    url = reverse("api-compare", args=[setup["campaign"].pk])
    base = Adapter.objects.get(pk=setup["adapters"][0].pk).base_model_id
    adapter = setup["adapters"][0].pk
    for key in (f"base:{base}", f"adapter:{adapter}"):
        response = setup[REVIEWER].get(url, {"left": key, "right": key})
        assert response.status_code == 400
        assert "two different versions" in response.json()["detail"]


@pytest.mark.django_db
def test_invalid_adapter_list_filters_are_400(setup: dict[str, Any]) -> None:
    """``?campaign=null`` was ignored (200 with every adapter): now 400."""
    url = reverse("api-adapter-list")
    for bad in ("null", "abc", "-1", "0", "9" * 30):
        response = setup[REVIEWER].get(url, {"campaign": bad})
        assert response.status_code == 400 and "campaign" in response.json()
    ok = setup[REVIEWER].get(url, {"campaign": setup["campaign"].pk})
    assert ok.status_code == 200 and len(ok.json()) == 2
    assert setup[REVIEWER].get(url).status_code == 200


@pytest.mark.django_db
def test_listing_base_models_writes_nothing(setup: dict[str, Any]) -> None:
    """The built-in default exists from migrate on; GET only lists."""
    before = BaseModelVersion.objects.count()
    names = [
        b["name"] for b in setup[REVIEWER].get(reverse("api-base-model-list")).json()
    ]
    assert "SmolLM2-135M-Instruct" in names
    assert BaseModelVersion.objects.count() == before


@pytest.mark.django_db
def test_a_new_base_model_is_never_made_the_default_by_a_post(
    setup: dict[str, Any],
) -> None:
    """``is_default`` is read-only: sending it used to fail the uniqueness
    check with a 400 although the schema allowed it; now it is ignored."""
    BaseModelVersion.objects.update(is_default=False)
    BaseModelVersion.objects.create(name="d", source="/models/d", is_default=True)
    response = setup[ADMIN].post(
        reverse("api-base-model-list"),
        {"name": "n", "source": "/models/n", "is_default": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["is_default"] is False
    assert BaseModelVersion.objects.get(is_default=True).name == "d"


@pytest.mark.django_db
def test_adapter_events_are_a_list_of_documented_rows(setup: dict[str, Any]) -> None:
    adapter = setup["adapters"][0]
    events = (
        setup[REVIEWER].get(reverse("api-adapter-events", args=[adapter.pk])).json()
    )
    assert [e["action"] for e in events] == ["registered"]
    assert set(events[0]) == {
        "id",
        "action",
        "previous_champion_id",
        "actor_id",
        "override",
        "reason",
        "evidence",
        "created_at",
    }
