"""The whole loop, from an empty campaign, through the REST API only.

Usage::

    ./arbiter bench loop [--rounds 3] [--budget-minutes 60] [--keep]

It starts the product exactly as ``./arbiter demo`` does (embedded PostgreSQL
and Redis, web, beat, a default and a gpu worker; no demo data) under
``.data/bench-loop`` (wiped first unless ``--keep``), makes an admin with
``createsuperuser`` + ``drf_create_token`` and then speaks only HTTP:

setup (counted, printed): create the campaign, import the prompts, create
the scripted annotator through the people API, and set the small settings
below through the campaign settings API.

after the setup the only writes are the annotator's: ``next`` and
``preference``, whatever the queue serves. Everything else (bootstrap pairs
from the base, DPO training, the candidate's generation round, the gate,
automatic promotion, the next round against the new champion) is the
product's own beat and workers. The benchmark only reads (GET) to report.

The annotator's rule: **it prefers the answer with more digits** (0-9); on
equal counts it answers "tie" (ties are left out of DPO's training pairs).
"Contains a digit" alone left 33 of the first 40 base-vs-base pairs tied.
The champion's quality is judged by the same rule on the golden prompts: per
prompt, a win when the champion's answer has more digits than the base's, a
loss when fewer, a tie otherwise; a one-sided sign test (scipy) over the
decided prompts gives the p-value.
Guardrail figures (repetition, degenerate and empty shares, mean length) are
computed with ``ml.guardrails`` on the golden answers of the champion and
the base; the drift from the base (the base's mean per-token NLL of the
answers) comes from the candidate round's guardrail record.

Targets (issue 9): after the rounds the champion beats the base on the rule
with p < 0.05, has no more degenerate golden answers than the base, and the
run fits in ``--budget-minutes``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

DIGITS = set("0123456789")

# ---------------------------------------------------------------- prompts

NUMERIC = [
    "How many legs does a spider have?",
    "How many days are there in a leap year?",
    "How many continents are there?",
    "In what year did people first walk on the Moon?",
    "How many minutes are in three hours?",
    "What is twelve times seven?",
    "How many sides does a hexagon have?",
    "At what temperature does water boil at sea level?",
    "How many planets are in our solar system?",
    "How many strings does a standard guitar have?",
    "How many players does a soccer team have on the field?",
    "How many hours are in a week?",
    "How many bones are in the adult human body?",
    "How many keys does a standard piano have?",
    "What is the square root of eighty-one?",
    "How many weeks are in a year?",
    "How many centimetres are in a metre?",
    "How many grams are in a kilogram?",
    "How many seconds are in an hour?",
    "How many months have thirty-one days?",
]
TIPS = [
    "saving money",
    "sleeping better",
    "learning a new language",
    "cooking rice",
    "keeping houseplants alive",
    "studying for an exam",
    "writing a cover letter",
    "staying focused at work",
    "reducing stress",
    "drinking more water",
    "starting to meditate",
    "cleaning a kitchen quickly",
    "walking a dog",
    "making good coffee",
    "planning a birthday party",
    "organising a desk",
    "training a puppy",
    "baking bread",
    "running a first race",
    "waking up early",
]
LISTS = [
    "a beach day",
    "a camping trip",
    "a business trip",
    "a ski weekend",
    "a picnic",
    "a day hike",
    "a long flight",
    "a gym session",
    "a music festival",
    "a road trip",
]
ROUTINES = [
    "a student",
    "a remote worker",
    "a new parent",
    "a retiree",
    "a runner",
    "a musician",
    "a writer",
    "a night-shift nurse",
    "a teenager",
    "a chef",
]
EXPLAIN = [
    "photosynthesis",
    "gravity",
    "inflation",
    "the water cycle",
    "how vaccines work",
    "what a CPU does",
    "why the sky is blue",
    "how a rainbow forms",
    "what DNA is",
    "how bees make honey",
    "compound interest",
    "the seasons",
    "tides",
    "volcanoes",
    "recycling",
    "clouds",
    "the internet",
    "sleep",
    "electricity",
    "how a bicycle stays upright",
]
HOW_LONG = [
    "boil an egg",
    "steep green tea",
    "rest between workouts",
    "nap in the afternoon",
    "cook pasta",
    "let bread dough rise",
    "brush my teeth",
    "wait before swimming after eating",
    "study without a break",
    "leave a steak to rest",
]


def prompts() -> list[str]:
    return [
        *NUMERIC,
        *(f"Give me one practical tip for {t}." for t in TIPS),
        *(f"Write a short packing list for {p}." for p in LISTS),
        *(f"Suggest a simple daily routine for {w}." for w in ROUTINES),
        *(f"Explain {t} in two sentences." for t in EXPLAIN),
        *(f"How long should I {x}?" for x in HOW_LONG),
    ]


def import_lines(texts: list[str], golden_every: int) -> bytes:
    """JSONL for the import API; every ``golden_every``-th prompt is golden
    (so each kind of prompt is among the golden ones)."""
    return b"".join(
        json.dumps({"prompt": text, "golden": i % golden_every == 0}).encode() + b"\n"
        for i, text in enumerate(texts)
    )


# ---------------------------------------------------------------- HTTP


class Api:
    """A token-authenticated JSON client (standard library only)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.writes = 0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Token {self.token}",
                "Accept": "application/json",
                **({"Content-Type": content_type} if data is not None else {}),
            },
        )
        if method != "GET":
            self.writes += 1
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                code, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            code, payload = error.code, error.read()
        parsed = json.loads(payload) if payload else None
        if code not in ok:
            raise RuntimeError(f"{method} {path} -> {code}: {parsed}")
        return code, parsed

    def get(self, path: str) -> Any:
        return self.call("GET", path)[1]

    def upload(self, path: str, name: str, content: bytes) -> Any:
        boundary = uuid.uuid4().hex
        raw = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        raw += content + f"\r\n--{boundary}--\r\n".encode()
        return self.call(
            "POST",
            path,
            raw=raw,
            content_type=f"multipart/form-data; boundary={boundary}",
        )[1]


# ---------------------------------------------------------------- the product


def start_product(data_dir: Path, port: int, tick: float) -> tuple[Any, Any, dict]:
    """The product as ``./arbiter demo`` runs it, without the demo data."""
    from core.launch import prepare, product_processes
    from core.supervisor import Supervisor

    for var in ("DATABASE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(var, None)
    os.environ["ARBITER_LOOP_TICK_SECONDS"] = str(tick)
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-loop-" + uuid.uuid4().hex)
    # The product's processes import this checkout's code even when the
    # virtualenv's editable install points at another one (a worktree).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    services, env = prepare(data_dir=data_dir, host="127.0.0.1", seed=False)
    supervisor = Supervisor(
        product_processes(host="127.0.0.1", port=port, data_dir=data_dir),
        env=env,
        cwd=ROOT,
        say=lambda line: None,
        log_dir=data_dir / "logs",
    )
    return services, supervisor, env


def admin_token(env: dict[str, str]) -> str:
    """The one admin, and its API token (setup; the last non-HTTP step)."""
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(
        [
            *manage,
            "createsuperuser",
            "--no-input",
            "--username",
            "bench-admin",
            "--email",
            "bench-admin@example.com",
        ],
        env={**env, "DJANGO_SUPERUSER_PASSWORD": uuid.uuid4().hex},
        cwd=ROOT,
        check=True,
    )
    out = subprocess.run(
        [*manage, "drf_create_token", "bench-admin"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[2]  # "Generated token <key> for user bench-admin"


def wait_ready(api: Api, supervisor: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.poll()
        try:
            api.get("/api/v1/me/")
            return
        except (OSError, RuntimeError):
            time.sleep(0.5)
    raise SystemExit("the web server did not answer within 2 minutes")


# ---------------------------------------------------------------- the annotator


def digits(text: str) -> int:
    return sum(ch in DIGITS for ch in text)


def has_digit(text: str) -> bool:
    return not DIGITS.isdisjoint(text)


def rule_choice(left: str, right: str) -> str:
    """The scripted annotator: the answer with more digits wins; else a tie."""
    a, b = digits(left), digits(right)
    if a == b:
        return "tie"
    return "left" if a > b else "right"


@dataclass
class Annotator:
    api: Api
    campaign_id: int
    labels: int = 0
    choices: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                code, pair = self.api.call(
                    "POST", f"/api/v1/campaigns/{self.campaign_id}/next/"
                )
                if code == 204:
                    self.stop.wait(1.0)
                    continue
                choice = rule_choice(pair["left"], pair["right"])
                self.api.call(
                    "POST",
                    f"/api/v1/leases/{pair['lease_id']}/preference/",
                    {
                        "choice": choice,
                        "client_request_id": f"bench-{pair['lease_id']}",
                    },
                )
                self.labels += 1
                self.choices[choice] = self.choices.get(choice, 0) + 1
        except (OSError, RuntimeError) as error:  # reported by the main thread
            self.error = str(error)


# ---------------------------------------------------------------- judging


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value that wins outnumber losses by chance (ties dropped)."""
    from scipy.stats import binomtest

    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Champion (left) against the base (right) on the golden prompts, by the
    annotator's rule, and guardrail figures of both sides' answers."""
    from ml.guardrails import is_degenerate, repetition

    pairs = [(r["left"], r["right"]) for r in rows if r["left"] and r["right"]]
    wins = sum(digits(a) > digits(b) for a, b in pairs)
    losses = sum(digits(a) < digits(b) for a, b in pairs)

    def figures(texts: list[str]) -> dict[str, float]:
        n = max(len(texts), 1)
        return {
            "digit": sum(map(has_digit, texts)) / n,
            "digits": sum(map(digits, texts)) / n,
            "repetition": sum(map(repetition, texts)) / n,
            "degenerate": sum(map(is_degenerate, texts)),
            "empty": sum(not t.strip() for t in texts),
            "length": sum(map(len, texts)) / n,
        }

    return {
        "n": len(pairs),
        "wins": wins,
        "losses": losses,
        "ties": len(pairs) - wins - losses,
        "rate": (wins + 0.5 * (len(pairs) - wins - losses)) / max(len(pairs), 1),
        "p": sign_test(wins, losses),
        "champion": figures([a for a, _ in pairs]),
        "base": figures([b for _, b in pairs]),
    }


# ---------------------------------------------------------------- rounds


@dataclass
class Round:
    number: int
    adapter: dict[str, Any]
    decided: str = ""  # promoted, refused, retired
    reason: str = ""
    labels: int = 0
    training_seconds: float | None = None
    tokens_per_second: float | None = None
    guardrails: dict[str, Any] = field(default_factory=dict)
    judged: dict[str, Any] = field(default_factory=dict)
    minutes: float = 0.0


def decision(api: Api, adapter: dict[str, Any]) -> tuple[str, str]:
    if adapter["status"] == "champion":
        return "promoted", ""
    events = api.get(f"/api/v1/models/adapters/{adapter['id']}/events/")
    events = events.get("results", events) if isinstance(events, dict) else events
    for event in events:
        if event["action"] in ("refused", "retired"):
            return event["action"], event.get("reason", "")
    if adapter["status"] == "retired":
        return "retired", ""
    return "", ""


def round_details(api: Api, campaign_id: int, round_: Round, base_key: str) -> None:
    adapter = round_.adapter
    if adapter.get("job_id"):
        job = api.get(f"/api/v1/training/jobs/{adapter['job_id']}/")
        if job["started_at"] and job["finished_at"]:
            round_.training_seconds = _seconds(job["finished_at"]) - _seconds(
                job["started_at"]
            )
    jobs = api.get(f"/api/v1/models/generation-jobs/?campaign={campaign_id}")
    jobs = jobs.get("results", jobs) if isinstance(jobs, dict) else jobs
    for job in jobs:
        if job["kind"] == "candidate" and job["adapter"] == adapter["id"]:
            round_.tokens_per_second = job["tokens_per_second"]
            round_.guardrails = job["guardrails"] or {}
    champion = next(
        (
            a
            for a in api.get(f"/api/v1/models/adapters/?campaign={campaign_id}")
            if a["role"] == "policy" and a["status"] == "champion"
        ),
        None,
    )
    if champion is not None:
        compare = api.get(
            f"/api/v1/models/campaigns/{campaign_id}/compare/"
            f"?left=adapter:{champion['id']}&right={base_key}"
        )
        round_.judged = {"champion_name": champion["name"], **judge(compare["rows"])}


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def print_round(r: Round) -> None:
    g = r.guardrails
    cand, opp = g.get("candidate", {}), g.get("opponent", {})
    j = r.judged
    print(
        f"\nround {r.number}: {r.adapter['name']} {r.decided.upper() or 'UNDECIDED'}"
        f"{' (' + r.reason + ')' if r.reason else ''} at {r.minutes:.1f} min"
    )
    print(f"  labels so far          {r.labels}")
    print(
        "  training wall time     "
        + (f"{r.training_seconds:.0f} s" if r.training_seconds else "-")
    )
    print(
        "  generation tokens/s    "
        + (f"{r.tokens_per_second:.1f}" if r.tokens_per_second else "-")
    )
    if cand:
        print(
            f"  guardrails (candidate | opponent {g.get('opponent_key', '?')}): repetition "
            f"{cand.get('repetition_mean', 0):.3f} | {opp.get('repetition_mean', 0):.3f}, "
            f"degenerate {cand.get('degenerate', 0):.0%} | {opp.get('degenerate', 0):.0%}, "
            f"empty {cand.get('empty', 0):.0%} | {opp.get('empty', 0):.0%}, "
            f"cut at max_new_tokens {cand.get('truncated', 0):.0%} | "
            f"{opp.get('truncated', 0):.0%}, "
            f"length {_mean_length(cand):.0f} | {_mean_length(opp):.0f} chars, "
            f"NLL under base {cand.get('nll_under_base') or 0:.2f} | "
            f"{opp.get('nll_under_base') or 0:.2f}"
        )
    if j:
        c, b = j["champion"], j["base"]
        print(
            f"  champion {j['champion_name']} vs base on {j['n']} golden prompts by the rule: "
            f"{j['wins']} wins, {j['losses']} losses, {j['ties']} ties, "
            f"win rate {j['rate']:.2f}, sign test p = {j['p']:.4f}"
        )
        print(
            f"  golden answers (champion | base): with a digit {c['digit']:.0%} | "
            f"{b['digit']:.0%}, digits per answer {c['digits']:.1f} | "
            f"{b['digits']:.1f}, degenerate {c['degenerate']} | {b['degenerate']}, "
            f"empty {c['empty']} | {b['empty']}, repetition {c['repetition']:.3f} | "
            f"{b['repetition']:.3f}, length {c['length']:.0f} | {b['length']:.0f} chars"
        )
    else:
        print("  no champion yet: the base serves")
    print("  manual steps           0")


def _mean_length(figures: dict[str, Any]) -> float:
    return float(figures.get("length_mean") or 0)


# ---------------------------------------------------------------- main


SETTINGS = {
    # Small settings so three rounds fit in an hour on 2 CPU cores.
    "generation": {
        "max_new_tokens": 64,
        "low_water_mark": 10,
        "bootstrap_prompts": 40,
        "samples_per_prompt": 2,
        "prompts_per_round": 30,
        "gate_min_comparisons": 20,
    },
    "training": {"min_new_preferences": 40, "min_interval_minutes": 0},
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--golden-every", type=int, default=3)
    parser.add_argument("--port", type=int, default=8017)
    parser.add_argument("--tick", type=float, default=5.0, help="beat's loop tick, s")
    parser.add_argument(
        "--settings",
        default="",
        help="JSON merged over the small default settings (same shape as the "
        "campaign settings API)",
    )
    parser.add_argument("--keep", action="store_true", help="keep .data/bench-loop")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    data_dir = ROOT / ".data" / "bench-loop"
    if data_dir.exists() and not args.keep:
        shutil.rmtree(data_dir)
    settings = json.loads(json.dumps(SETTINGS))
    for section, values in json.loads(args.settings or "{}").items():
        settings.setdefault(section, {}).update(values)

    started = time.monotonic()
    services, supervisor, env = start_product(data_dir, args.port, args.tick)
    try:
        supervisor.start()
        return run(args, settings, admin_token(env), supervisor, started)
    finally:
        supervisor.stop(timeout=10)
        services.stop()


def run(
    args: argparse.Namespace,
    settings: dict[str, Any],
    token: str,
    supervisor: Any,
    started: float,
) -> int:
    admin = Api(f"http://127.0.0.1:{args.port}", token)
    wait_ready(admin, supervisor)
    texts = prompts()
    print(
        f"loop benchmark: {len(texts)} prompts, every {args.golden_every}rd golden; "
        f"settings {json.dumps(settings)}"
    )
    # ---- setup: the only calls that are not labeling
    campaign = admin.call(
        "POST",
        "/api/v1/campaigns/",
        {
            "name": f"bench-loop-{int(time.time())}",
            "guidelines": "Prefer the answer with more digits (0-9).",
        },
    )[1]
    cid = campaign["id"]
    admin.upload(
        f"/api/v1/campaigns/{cid}/import/",
        "prompts.jsonl",
        import_lines(texts, args.golden_every),
    )
    person = admin.call(
        "POST", "/api/v1/people/", {"username": "bench-annotator", "role": "annotator"}
    )[1]
    admin.call("PATCH", f"/api/v1/campaigns/{cid}/settings/", settings)
    setup_calls = admin.writes
    base = next(b for b in admin.get("/api/v1/models/base/") if b["is_default"])
    base_key = f"base:{base['id']}"
    print(
        f"setup: {setup_calls} calls (campaign, import, annotator, settings) in "
        f"{time.monotonic() - started:.0f} s; base model {base['name']}"
    )

    annotator = Annotator(Api(admin.base, person["token"]), cid)
    thread = threading.Thread(target=annotator.run, daemon=True)
    thread.start()

    rounds: dict[int, Round] = {}
    deadline = started + args.budget_minutes * 60
    last_status = 0.0
    try:
        while time.monotonic() < deadline:
            supervisor.poll()
            if annotator.error:
                raise SystemExit(f"the annotator failed: {annotator.error}")
            candidates = [
                a
                for a in admin.get(f"/api/v1/models/adapters/?campaign={cid}")
                if a["role"] == "policy"
            ]
            for number, adapter in enumerate(
                sorted(candidates, key=lambda a: a["id"]), start=1
            ):
                r = rounds.setdefault(number, Round(number, adapter))
                if r.decided:
                    continue
                r.adapter = adapter
                r.decided, r.reason = decision(admin, adapter)
                if not r.decided and number < len(candidates):
                    # The next round started before this candidate's gate
                    # passed (its comparisons were too close to call).
                    r.decided, r.reason = "not promoted", "superseded, gate not passed"
                if r.decided:
                    r.labels = annotator.labels
                    r.minutes = (time.monotonic() - started) / 60
                    round_details(admin, cid, r, base_key)
                    print_round(r)
            decided = [r for r in rounds.values() if r.decided]
            if len(decided) >= args.rounds:
                break
            if time.monotonic() - last_status > 60:
                last_status = time.monotonic()
                print(
                    f"  … {(time.monotonic() - started) / 60:.1f} min: "
                    f"{annotator.labels} labels {dict(annotator.choices)}, "
                    f"{len(candidates)} candidates, {len(decided)} decided",
                    flush=True,
                )
            time.sleep(5)
    finally:
        annotator.stop.set()
        thread.join(timeout=30)

    minutes = (time.monotonic() - started) / 60
    final = max(
        (r for r in rounds.values() if r.decided and r.judged),
        key=lambda r: r.number,
        default=None,
    )
    decided = sum(bool(r.decided) for r in rounds.values())
    promoted = sum(r.decided == "promoted" for r in rounds.values())
    print(
        f"\nsummary: {decided} rounds decided ({promoted} promoted) in "
        f"{minutes:.1f} min; {annotator.labels} labels; manual steps after setup: 0"
    )
    checks = {
        f"{args.rounds} rounds decided": decided >= args.rounds,
        f"within {args.budget_minutes:.0f} min": minutes <= args.budget_minutes,
    }
    if final is not None:
        j = final.judged
        checks["champion beats the base on the rule (p < 0.05)"] = j["p"] < 0.05
        checks["no more degenerate golden answers than the base"] = (
            j["champion"]["degenerate"] <= j["base"]["degenerate"]
        )
    else:
        checks["a champion exists"] = False
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
