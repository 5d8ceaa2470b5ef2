"""The API keeps the promises of its schema under fuzzing: schemathesis
generates requests for every operation of ``/api/schema/`` and sends them,
over HTTP, to the live test server, as an admin and as an annotator, over a
populated database (campaign, prompts, pairs, labels, a lease, adapters, a
training job, a generation job). No answer is a 5xx, every status is one the
operation documents, every body matches its documented shape, and a request
the schema calls valid is never refused as malformed input.

Path ids are the real ones half of the time and generated the other half.
Each operation also gets a few negative cases (input the schema forbids):
those must be refused with a documented 4xx and body, never a 5xx. Bounded
(a few examples per operation, derandomized) so it fits the suite; the
summary (operations, cases, statuses, failures) is printed at the end.
Nothing consumes the queues here, so the launches it makes stay queued.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.roles import ADMIN, ANNOTATOR
from labeling.models import Preference
from tests.core.test_get_requests_do_not_write import world  # noqa: F401

# Valid cases per operation and role (an annotator meets the role check on
# most operations, so fewer tell as much), and invalid ones per operation.
POSITIVE_EXAMPLES = {ADMIN: 6, ANNOTATOR: 4}
NEGATIVE_EXAMPLES = 1
PATH_PARAMETER = re.compile(r"{(\w+)}")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# Refusals of well-formed input that no schema can state: an id that names
# nothing, and a password the site's validators find weak (its description
# says so).
DOCUMENTED_REFUSALS = re.compile(
    r"does not exist|^Unknown user ids|password|too similar|too common"
)


def _messages(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list):
        return [m for v in value for m in _messages(v)]
    return [str(value)]


def _refused_as_invalid(case: Any, response: Any) -> bool:
    """A request the schema calls valid answered 400 "Invalid input.": the
    input serializer refuses what the schema allows. (A 400 for a domain
    rule carries its own reason.)"""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return False
    if response.status_code != 400:
        return False
    body = response.json()
    if not isinstance(body, dict) or body.get("detail") != "Invalid input.":
        return False
    fields = {k: v for k, v in body.items() if k != "detail"}
    return not all(DOCUMENTED_REFUSALS.search(m) for m in _messages(fields))


def _token(user: Any) -> str:
    # Rotating one's own token is an operation under test: read it fresh.
    return Token.objects.get_or_create(user=user)[0].key


class Fuzzer:
    """Sends the cases of each operation as ``user`` and collects what the
    checks find (without shrinking: one example per kind of failure)."""

    def __init__(
        self, base_url: str, user: Any, ids: dict[str, Any], *, examples: int
    ) -> None:
        self.examples = examples
        self.base_url = base_url
        self.user = user
        self.ids = ids
        self.session = requests.Session()
        self.statuses: Counter[int] = Counter()
        self.failures: dict[str, str] = {}
        self.operations = 0
        self.cases = 0
        self.nothing_to_negate: list[str] = []

    def run(self) -> None:
        loaded = schemathesis.openapi.from_url(
            f"{self.base_url}/api/schema/?format=json",
            headers={"Authorization": f"Token {_token(self.user)}"},
        )
        for result in loaded.get_all_operations():
            operation = result.ok()
            self.operations += 1
            names = PATH_PARAMETER.findall(operation.path)
            real = {name: self.ids[name] for name in names if name in self.ids}
            positive = operation.as_strategy(path_parameters=real)
            if names:
                positive = st.one_of(positive, operation.as_strategy())
            negative = operation.as_strategy(
                GenerationMode.NEGATIVE, path_parameters=real
            )
            self._examples(positive, self.examples)
            try:
                self._examples(negative, NEGATIVE_EXAMPLES)
            except Unsatisfiable:
                # No input to get wrong (no body, query or path id).
                self.nothing_to_negate.append(operation.label)

    def _examples(self, strategy: Any, examples: int) -> None:
        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Any) -> None:
            self._send(case)

        send()

    def _send(self, case: Any) -> None:
        self.cases += 1
        headers = {"Authorization": f"Token {_token(self.user)}"}
        response = case.call(
            base_url=self.base_url, session=self.session, headers=headers
        )
        self.statuses[response.status_code] += 1
        found = []
        if _refused_as_invalid(case, response):
            found.append(("Valid request refused as invalid input", response.text))
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=headers,
                transport_kwargs={"base_url": self.base_url},
            )
        except FailureGroup as group:
            found += [(f.title, f.message) for f in group.exceptions]
        for title, message in found:
            key = f"{case.operation.label}: {title}"
            self.failures.setdefault(
                key,
                f"{key} ({response.status_code}) {message}"[:600]
                + f"\n    {case.as_curl_command(headers=headers)}"[:600],
            )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", [ADMIN, ANNOTATOR])
def test_the_api_keeps_its_schema_under_fuzzing(
    world: dict[str, Any],  # noqa: F811
    live_server: Any,
    make_user: Any,
    role: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every operation, as ``role``: no 5xx, only documented statuses, bodies
    of the documented shape, and no schema-valid input refused."""
    user = world["admin" if role == ADMIN else "annotator"]
    # Someone else to create tokens for, demote and deactivate.
    ids = {
        **world["values"],
        "user_id": make_user(ANNOTATOR).pk,
        "preference_id": Preference.objects.order_by("pk").values_list("pk", flat=True)[
            0
        ],
    }
    started = time.monotonic()
    fuzzer = Fuzzer(live_server.url, user, ids, examples=POSITIVE_EXAMPLES[role])
    fuzzer.run()
    with capsys.disabled():
        print(  # noqa: T201
            f"\nAPI fuzz as {role}: {fuzzer.operations} operations, "
            f"{fuzzer.cases} cases in {time.monotonic() - started:.0f} s, "
            f"statuses {dict(sorted(fuzzer.statuses.items()))}, "
            f"{len(fuzzer.failures)} failures"
        )
    assert fuzzer.operations > 40
    assert sorted(fuzzer.failures.values()) == [], "\n".join(
        sorted(fuzzer.failures.values())
    )
