"""A model version's key: ``"base:<id>"`` (a base model alone) or
``"adapter:<id>"`` (a base model with an adapter). Keys travel in URLs,
task arguments, leaderboard rows and completion labels; they are parsed
and formatted here and nowhere else, and ``version_names`` turns them into
the names people read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from models_hub.exceptions import ModelsHubError
from models_hub.models import Adapter, BaseModelVersion

Kind = Literal["base", "adapter"]
KINDS: tuple[Kind, ...] = ("base", "adapter")


class InvalidVersionKey(ModelsHubError):
    """A string that is not ``base:<id>`` or ``adapter:<id>`` (400)."""


class SameVersion(ModelsHubError):
    """Both sides of a comparison are the same version (400)."""


@dataclass(frozen=True, order=True)
class VersionKey:
    kind: Kind
    pk: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidVersionKey(f"Unknown version kind {self.kind!r}.")

    def __str__(self) -> str:
        return f"{self.kind}:{self.pk}"

    @classmethod
    def parse(cls, raw: object) -> VersionKey:
        """``"adapter:3"`` → ``VersionKey("adapter", 3)``; anything else raises
        ``InvalidVersionKey``."""
        text = raw if isinstance(raw, str) else ""
        if not text.strip():
            raise InvalidVersionKey("Pick a model version.")
        kind, sep, digits = text.strip().partition(":")
        if not sep or kind not in KINDS or not digits.isascii() or not digits.isdigit():
            raise InvalidVersionKey(
                f"{raw!r} is not a model version: expected base:<id> or adapter:<id>."
            )
        return cls(cast(Kind, kind), int(digits))

    @classmethod
    def adapter(cls, pk: int) -> VersionKey:
        return cls("adapter", pk)

    @classmethod
    def base(cls, pk: int) -> VersionKey:
        return cls("base", pk)

    @classmethod
    def of(
        cls, *, adapter_id: int | None, base_model_id: int | None
    ) -> VersionKey | None:
        """The version that wrote a completion: its adapter, else its base
        model alone; None for a completion no model wrote."""
        if adapter_id is not None:
            return cls.adapter(adapter_id)
        if base_model_id is not None:
            return cls.base(base_model_id)
        return None

    @property
    def is_base(self) -> bool:
        return self.kind == "base"


def version_pair_parse(left: object, right: object) -> tuple[VersionKey, VersionKey]:
    """Two different versions to compare, or ``InvalidVersionKey`` /
    ``SameVersion``."""
    a, b = VersionKey.parse(left), VersionKey.parse(right)
    if a == b:
        raise SameVersion(f"Pick two different versions: both sides are {a}.")
    return a, b


def version_name(
    *,
    key: VersionKey,
    adapter: Adapter | None = None,
    base: BaseModelVersion | None = None,
) -> str:
    """What people call a version: ``"base: SmolLM2-135M-Instruct"`` for a
    base model alone, the adapter's name (``"dpo-v3"``) otherwise; the key
    itself when its row is not given (deleted, or never existed)."""
    if key.is_base:
        return f"base: {base.name}" if base is not None else str(key)
    return adapter.name if adapter is not None else str(key)


def version_names(*, keys: Iterable[str]) -> dict[str, str]:
    """``{key: name}`` for formatted keys (see ``version_name``), in two
    queries whatever their number. A malformed key names itself."""
    names: dict[str, str] = {}
    parsed: dict[str, VersionKey] = {}
    for raw in keys:
        names[raw] = raw
        try:
            parsed[raw] = VersionKey.parse(raw)
        except InvalidVersionKey:
            continue
    adapters = Adapter.objects.in_bulk([k.pk for k in parsed.values() if not k.is_base])
    bases = BaseModelVersion.objects.in_bulk(
        [k.pk for k in parsed.values() if k.is_base]
    )
    for raw, key in parsed.items():
        names[raw] = version_name(
            key=key,
            adapter=None if key.is_base else adapters.get(key.pk),
            base=bases.get(key.pk) if key.is_base else None,
        )
    return names
