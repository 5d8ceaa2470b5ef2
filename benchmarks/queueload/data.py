"""The benchmark's data: annotators with tokens, and campaigns of pending
pairs bulk-loaded in SQL; reset to 'all pending' before each run."""

from __future__ import annotations

import math
import time
from typing import Any

from .shared import log

USER_PREFIX = "bench-annotator-"
PROBE_USER = "bench-probe"
CAMPAIGN_PREFIX = "bench-queue-"
COMPLETIONS_PER_PROMPT = 10  # 45 distinct pairs per prompt
#: What the loaders fill (labeling_comparisonitem: ranked campaigns only).
LOADED_TABLES = (
    "labeling_prompt",
    "labeling_completion",
    "labeling_comparison",
    "labeling_comparisonitem",
)


def _filler_defaults(cursor: Any, table: str, given: set[str]) -> dict[str, str]:
    """SQL expressions for NOT NULL columns without a database default that
    the loader does not set itself (fields added to the models later)."""
    cursor.execute(
        """
        SELECT column_name, data_type
        FROM information_schema.columns
        WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL
        """,
        [table],
    )
    by_type = {
        "boolean": "false",
        "integer": "0",
        "bigint": "0",
        "smallint": "0",
        "double precision": "0",
        "real": "0",
        "numeric": "0",
        "text": "''",
        "character varying": "''",
        "jsonb": "'{}'::jsonb",
        "ARRAY": "'{}'",
        "timestamp with time zone": "now()",
    }
    extra = {}
    for name, data_type in cursor.fetchall():
        if name in given or name == "id":
            continue
        if data_type not in by_type:
            raise RuntimeError(
                f"{table}.{name} ({data_type}) is required and unknown to the loader"
            )
        extra[name] = by_type[data_type]
    return extra


def _insert_select(
    cursor: Any, table: str, columns: dict[str, str], tail: str, params: dict[str, Any]
) -> int:
    columns = {**columns, **_filler_defaults(cursor, table, set(columns))}
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns.values())} {tail}"
    cursor.execute(sql, params)
    return cursor.rowcount


def dataset_load(campaign_id: int, size: int) -> None:
    """Prompts x 10 completions, and ``size`` distinct pairs among them, in SQL."""
    from django.db import connection, transaction

    prompts = math.ceil(
        size / (COMPLETIONS_PER_PROMPT * (COMPLETIONS_PER_PROMPT - 1) // 2)
    )
    params = {
        "cid": campaign_id,
        "prompts": prompts,
        "m": COMPLETIONS_PER_PROMPT,
        "n": size,
    }
    t0 = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        # The rows are consistent by construction: skip per-row FK triggers.
        cursor.execute("SET LOCAL session_replication_role = replica")
        _dataset_delete(cursor, campaign_id)
        _insert_select(
            cursor,
            "labeling_prompt",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "campaign_id": "%(cid)s",
                "text": "'Benchmark prompt #' || g || ': explain, in a short paragraph, ' "
                "|| repeat('why the sky looks blue at noon and red at dusk. ', 3)",
                "content_hash": "md5('prompt-' || %(cid)s || '-' || g) || md5('p' || g)",
                "split": "'train'",
                "is_golden": "false",
                "metadata": "'{}'::jsonb",
            },
            "FROM generate_series(1, %(prompts)s) AS g",
            params,
        )
        _insert_select(
            cursor,
            "labeling_completion",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "prompt_id": "p.id",
                "text": "'Answer ' || j || ' to prompt ' || p.id || '. ' "
                "|| repeat('Sunlight scatters off air molecules; short wavelengths scatter most. ', 8)",
                "content_hash": "md5('completion-' || p.id || '-' || j) || md5('c' || j)",
                "origin": "'imported'",
                "source_label": "'bench-model-' || j",
                "generation": "'{}'::jsonb",
                "metadata": "'{}'::jsonb",
            },
            "FROM labeling_prompt p CROSS JOIN generate_series(0, %(m)s - 1) AS j WHERE p.campaign_id = %(cid)s",
            params,
        )
        n = _insert_select(
            cursor,
            "labeling_comparison",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "campaign_id": "%(cid)s",
                "prompt_id": "a.prompt_id",
                "completion_a_id": "a.id",
                "completion_b_id": "b.id",
                "priority": "0",
                "status": "'open'",
                "label_count": "0",
                "lease_expiries": "'{}'",
                "done_by": "'{}'",
            },
            """
            FROM labeling_prompt p
            JOIN labeling_completion a ON a.prompt_id = p.id
            JOIN labeling_completion b ON b.prompt_id = p.id AND b.id > a.id
            WHERE p.campaign_id = %(cid)s
            ORDER BY p.id, a.id, b.id
            LIMIT %(n)s
            """,
            params,
        )
    assert n == size, (n, size)
    log(
        f"loaded {size:,} pairs ({prompts:,} prompts, {prompts * COMPLETIONS_PER_PROMPT:,} completions) "
        f"in {time.monotonic() - t0:.1f} s"
    )


def dataset_load_ranked(campaign_id: int, size: int, k: int) -> None:
    """``size`` ranked comparisons of ``k`` completions each (one prompt
    each), with their items and implied pairs, in SQL: what a rank
    campaign's import leaves (``labeling.services.ranking``)."""
    from django.db import connection, transaction

    params = {"cid": campaign_id, "n": size, "k": k}
    t0 = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        _dataset_delete(cursor, campaign_id)
        _insert_select(
            cursor,
            "labeling_prompt",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "campaign_id": "%(cid)s",
                "text": "'Benchmark prompt #' || g || ': rank these answers about ' "
                "|| repeat('why the sky looks blue at noon and red at dusk. ', 3)",
                "content_hash": "md5('rprompt-' || %(cid)s || '-' || g) || md5('p' || g)",
                "split": "'train'",
                "is_golden": "false",
                "metadata": "'{}'::jsonb",
            },
            "FROM generate_series(1, %(n)s) AS g",
            params,
        )
        _insert_select(
            cursor,
            "labeling_completion",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "prompt_id": "p.id",
                "text": "'Answer ' || j || ' to prompt ' || p.id || '. ' "
                "|| repeat('Sunlight scatters off air molecules; short wavelengths scatter most. ', 8)",
                "content_hash": "md5('completion-' || p.id || '-' || j) || md5('c' || j)",
                "origin": "'imported'",
                "source_label": "'bench-model-' || j",
                "generation": "'{}'::jsonb",
                "metadata": "'{}'::jsonb",
            },
            "FROM labeling_prompt p CROSS JOIN generate_series(0, %(k)s - 1) AS j "
            "WHERE p.campaign_id = %(cid)s",
            params,
        )
        # The ranked comparison: its first two completions as a and b.
        n = _insert_select(
            cursor,
            "labeling_comparison",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "campaign_id": "%(cid)s",
                "prompt_id": "p.id",
                "completion_a_id": "(SELECT min(id) FROM labeling_completion WHERE prompt_id = p.id)",
                "completion_b_id": "(SELECT id FROM labeling_completion WHERE prompt_id = p.id "
                "ORDER BY id OFFSET 1 LIMIT 1)",
                "priority": "0",
                "status": "'open'",
                "label_count": "0",
                "lease_expiries": "'{}'",
                "done_by": "'{}'",
                "is_ranked": "true",
            },
            "FROM labeling_prompt p WHERE p.campaign_id = %(cid)s ORDER BY p.id",
            params,
        )
        _insert_select(
            cursor,
            "labeling_comparisonitem",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "comparison_id": "c.id",
                "completion_id": "x.id",
                "position": "x.pos",
            },
            """
            FROM labeling_comparison c
            JOIN LATERAL (
                SELECT id, (row_number() OVER (ORDER BY id) - 1) AS pos
                FROM labeling_completion WHERE prompt_id = c.prompt_id
            ) x ON true
            WHERE c.campaign_id = %(cid)s AND c.is_ranked
            """,
            params,
        )
        _insert_select(
            cursor,
            "labeling_comparison",
            {
                "created_at": "now()",
                "updated_at": "now()",
                "campaign_id": "%(cid)s",
                "prompt_id": "c.prompt_id",
                "completion_a_id": "a.completion_id",
                "completion_b_id": "b.completion_id",
                "priority": "0",
                "status": "'implied'",
                "label_count": "0",
                "lease_expiries": "'{}'",
                "done_by": "'{}'",
                "parent_id": "c.id",
            },
            """
            FROM labeling_comparison c
            JOIN labeling_comparisonitem a ON a.comparison_id = c.id
            JOIN labeling_comparisonitem b ON b.comparison_id = c.id
                                           AND b.position > a.position
            WHERE c.campaign_id = %(cid)s AND c.is_ranked
            """,
            params,
        )
    assert n == size, (n, size)
    log(
        f"loaded {size:,} ranked comparisons of {k} ({size * k:,} completions, "
        f"{size * k * (k - 1) // 2:,} implied pairs) in {time.monotonic() - t0:.1f} s"
    )


def _has_table(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return bool(cursor.fetchone()[0])


def _vacuum_analyze(cursor: Any, tables: tuple[str, ...]) -> None:
    """VACUUM ANALYZE those of ``tables`` this schema has."""
    for table in tables:
        if _has_table(cursor, table):
            cursor.execute(f"VACUUM ANALYZE {table}")


def _labels_delete(cursor: Any, campaign_id: int) -> None:
    """The campaign's preferences, rankings and leases."""
    cursor.execute(
        "DELETE FROM labeling_preference p USING labeling_comparison c "
        "WHERE p.comparison_id = c.id AND c.campaign_id = %s",
        [campaign_id],
    )
    if _has_table(cursor, "labeling_ranking"):
        cursor.execute(
            "DELETE FROM labeling_ranking r USING labeling_comparison c "
            "WHERE r.comparison_id = c.id AND c.campaign_id = %s",
            [campaign_id],
        )
    cursor.execute("DELETE FROM labeling_lease WHERE campaign_id = %s", [campaign_id])


def _dataset_delete(cursor: Any, campaign_id: int) -> None:
    _labels_delete(cursor, campaign_id)
    if _has_table(cursor, "labeling_comparisonitem"):
        cursor.execute(
            "DELETE FROM labeling_comparisonitem i USING labeling_comparison c "
            "WHERE i.comparison_id = c.id AND c.campaign_id = %s",
            [campaign_id],
        )
    cursor.execute(
        "DELETE FROM labeling_comparison WHERE campaign_id = %s", [campaign_id]
    )
    cursor.execute(
        "DELETE FROM labeling_completion c USING labeling_prompt p WHERE c.prompt_id = p.id AND p.campaign_id = %s",
        [campaign_id],
    )
    cursor.execute("DELETE FROM labeling_prompt WHERE campaign_id = %s", [campaign_id])


def dataset_reset(campaign_id: int) -> None:
    """Back to 'all pairs pending': drop this campaign's labels and leases and
    reopen the rows that a previous run touched, then VACUUM ANALYZE so each
    run starts from the same physical state."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        _labels_delete(cursor, campaign_id)
        cursor.execute(
            """
            UPDATE labeling_comparison
            SET status = 'open', label_count = 0, lease_expiries = '{}', done_by = '{}'
            WHERE campaign_id = %s AND status <> 'implied'
              AND (status <> 'open' OR label_count <> 0 OR lease_expiries <> '{}' OR done_by <> '{}')
            """,
            [campaign_id],
        )
    with connection.cursor() as cursor:
        _vacuum_analyze(
            cursor,
            (
                "labeling_comparison",
                "labeling_lease",
                "labeling_preference",
                "labeling_ranking",
            ),
        )


def setup_data(
    annotators: int, sizes: list[int], k: int, *, mode: str = "pair", rank_k: int = 4
) -> tuple[list[tuple[int, str]], dict[int, int]]:
    """Users with tokens, and one loaded campaign per size (``mode`` "rank":
    ``size`` ranked comparisons of ``rank_k`` completions each)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from core.roles import ANNOTATOR
    from core.services import roles_ensure
    from labeling.models import Campaign, Comparison
    from labeling.services.campaigns import campaign_create, campaign_update

    User = get_user_model()
    roles_ensure()
    group = Group.objects.get(name=ANNOTATOR)
    names = [f"{USER_PREFIX}{i:04d}" for i in range(annotators)] + [PROBE_USER]
    existing = set(
        User.objects.filter(username__in=names).values_list("username", flat=True)
    )
    new_users = []
    for name in names:
        if name not in existing:
            user = User(username=name)
            user.set_unusable_password()  # token auth only; skips 100x PBKDF2
            new_users.append(user)
    User.objects.bulk_create(new_users)
    users = {u.username: u for u in User.objects.filter(username__in=names)}
    group.user_set.add(*users.values())
    tokens = {t.user_id: t.key for t in Token.objects.filter(user__in=users.values())}
    missing = [
        Token(user=u, key=Token.generate_key())
        for u in users.values()
        if u.pk not in tokens
    ]
    Token.objects.bulk_create(missing)
    tokens.update({t.user_id: t.key for t in missing})
    creds = [(users[n].pk, tokens[users[n].pk]) for n in names]

    campaigns = {}
    for size in sizes:
        ranked = mode == "rank"
        name = f"{CAMPAIGN_PREFIX}{f'rank{rank_k}-' if ranked else ''}{size}"
        campaign = Campaign.objects.filter(name=name).first()
        if campaign is None:
            campaign = campaign_create(
                name=name,
                created_by=None,
                overlap_k=k,
                description="queue benchmark",
                **({"mode": "rank"} if ranked else {}),
            )
        settings = {"overlap_k": k, "status": Campaign.Status.ACTIVE}
        if hasattr(campaign, "gold_rate"):
            settings["gold_rate"] = 0.0
        if any(getattr(campaign, f) != v for f, v in settings.items()):
            campaign = campaign_update(campaign=campaign, data=settings)
        campaign.annotators.clear()  # open to every annotator
        queued = Comparison.objects.filter(campaign=campaign)
        if ranked:
            queued = queued.filter(is_ranked=True)
        count = queued.count()
        if count == size:
            log(f"campaign {name} (id {campaign.pk}): reusing {count:,} loaded pairs")
        else:
            log(
                f"campaign {name} (id {campaign.pk}): loading {size:,} pairs (found {count:,})"
            )
            if ranked:
                dataset_load_ranked(campaign.pk, size, rank_k)
            else:
                dataset_load(campaign.pk, size)
        campaigns[size] = campaign.pk
    return creds, campaigns


def browser_sessions(
    user_ids: list[int], *, as_before_issue_12: bool = False
) -> dict[int, str]:
    """A logged-in session per user, as the login page would leave it (the
    bench users have no password, so no one logs in through the form): in
    this tree's session engine, with the backend ``force_login`` would pick;
    ``as_before_issue_12``: as a baseline tree from before sessions were
    read from Redis keeps them (PostgreSQL alone, Django's ModelBackend)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )

    if as_before_issue_12:
        engine = "django.contrib.sessions.backends.db"
        backend = "django.contrib.auth.backends.ModelBackend"
    else:
        engine = settings.SESSION_ENGINE
        backend = next(
            path
            for path in settings.AUTHENTICATION_BACKENDS
            if hasattr(load_backend(path), "get_user")
        )
    SessionStore = import_module(engine).SessionStore  # noqa: N806
    keys = {}
    for user in get_user_model().objects.filter(pk__in=user_ids):
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys[user.pk] = session.session_key
    return keys


def database_settle() -> None:
    """After loading (the loaders themselves leave the statistics to this):
    VACUUM ANALYZE every table the loaders filled or
    ``completions_render`` rewrote, then CHECKPOINT. Otherwise autovacuum
    (its insert threshold) and the next checkpoint work through a
    million-row load inside the first measured windows, on the same two
    cores, and show up as their tail."""
    from django.db import connection

    with connection.cursor() as cursor:
        _vacuum_analyze(cursor, LOADED_TABLES)
        cursor.execute("CHECKPOINT")


def completions_render(campaign_ids: list[int]) -> None:
    """Fill ``Completion.html`` (the stored card HTML, where the schema has
    it) of completions the SQL loader left empty, as imports store it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'labeling_completion' AND column_name = 'html'"
        )
        if cursor.fetchone() is None:
            return
    from labeling.models import Completion
    from labeling.rendering import completion_html

    pending = Completion.objects.filter(
        prompt__campaign_id__in=campaign_ids, html=""
    ).exclude(text="")
    total = 0
    while True:
        batch = list(pending.only("pk", "text")[:5000])
        if not batch:
            break
        for completion in batch:
            completion.html = completion_html(completion.text)
        Completion.objects.bulk_update(batch, ["html"])
        total += len(batch)
    if total:
        log(f"rendered the stored HTML of {total:,} completions")
