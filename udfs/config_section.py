"""The base of the frozen settings classes (udfs/weighting/settings.py, training/settings.py): one
validated config section (jobs/config.py validates it), typed once and read as attributes."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="ConfigSection")


class ConfigSection:
    SECTION: ClassVar[str]                    # the config key the section lives under
    FLOATS: ClassVar[tuple[str, ...]] = ()    # YAML may give an int where a float is meant
    INTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_mapping(cls: type[S], section: Mapping[str, Any]) -> S:
        """From a validated config section. An unknown key is an error (a typo'd key in code would
        otherwise read as a default), and so is a missing one."""
        names = {f.name for f in fields(cls)}
        unknown, missing = set(section) - names, names - set(section)
        if unknown or missing:
            raise ValueError(f"{cls.SECTION} settings: unknown {sorted(unknown)}, missing {sorted(missing)}")
        values = dict(section)
        values.update({k: float(values[k]) for k in cls.FLOATS})
        values.update({k: int(values[k]) for k in cls.INTS})
        return cls(**cls._converted(values))

    @classmethod
    def _converted(cls, values: dict[str, Any]) -> dict[str, Any]:
        return values

    @classmethod
    def from_config(cls: type[S], cfg: Mapping[str, Any]) -> S:
        return cls.from_mapping(cfg[cls.SECTION])

    def but(self: S, **changes: Any) -> S:
        """A copy with some settings changed (tests, benchmarks)."""
        return replace(self, **changes)
