"""A model version's key: ``"base:<id>"`` (a base model alone) or
``"adapter:<id>"`` (a base model with an adapter). Keys travel in URLs,
task arguments, leaderboard rows and completion labels; they are parsed
and formatted here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from models_hub.exceptions import ModelsHubError

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
