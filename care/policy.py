"""The visit policy: groups of elders and how often each must be visited or called.

A group is matched on the registry's facts about the elder (living alone, in special
hardship, care level); the first group that matches is the elder's. Each group says
what contact counts (a ``visit`` at home, or a ``call``; a visit also counts for a call
group), how often (``every_days``) and the monthly rate the programme targets. The
default is the issue's example; a programme sets its own in a YAML file
(``HOMECARE_CARE__POLICY``), validated like the registry (unknown keys refused).

>>> from escalation.registry import Elder
>>> p = VisitPolicy()
>>> p.group_of(Elder(id="e1", display_name="A", site="s", address="x", care_level=4,
...                  living_alone=True)).name
'alone_high_need'
>>> p.group_of(Elder(id="e2", display_name="B", site="s", address="x")).name
'everyone'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from escalation.registry import Elder
from homecare.errors import ConfigError

Contact = Literal["visit", "call"]
CONTACTS: tuple[Contact, ...] = ("visit", "call")


class PolicyError(ConfigError):
    """The visit policy file cannot be used; the message names the field."""


class Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    living_alone: bool | None = Field(None, description="Match only this; none: either.")
    hardship: bool | None = None
    care_levels: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    contact: Contact = "visit"
    every_days: int = Field(30, ge=1, le=366)
    target_pct: float = Field(100.0, ge=0, le=100)

    def matches(self, elder: Elder) -> bool:
        return (
            (self.living_alone is None or elder.living_alone == self.living_alone)
            and (self.hardship is None or elder.hardship == self.hardship)
            and elder.care_level in self.care_levels
        )


def _default_groups() -> list[Group]:
    return [
        Group(name="hardship", hardship=True, contact="visit", every_days=30),
        Group(name="alone_high_need", living_alone=True, care_levels=[3, 4], every_days=30),
        Group(name="alone", living_alone=True, contact="call", every_days=14, target_pct=95),
        Group(name="everyone", contact="call", every_days=30, target_pct=90),
    ]


class VisitPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: list[Group] = Field(default_factory=_default_groups, min_length=1)
    follow_up_days: int = Field(
        7, ge=1, description="A follow-up open this long goes to the site's coordinator."
    )

    def group_of(self, elder: Elder) -> Group | None:
        """The first group that matches; ``None``: the policy asks nothing for them."""
        return next((g for g in self.groups if g.matches(elder)), None)

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)


def counts_for(group: Group, kind: str) -> bool:
    """Does a contact of ``kind`` satisfy the group (a visit satisfies a call group)?"""
    return kind == "visit" or group.contact == kind


def load_policy(path: Path | None) -> VisitPolicy:
    if path is None:
        return VisitPolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return VisitPolicy.model_validate(data)
    except OSError as exc:
        raise PolicyError(f"visit policy {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"visit policy {path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"visit policy {path} is invalid: {problems}") from exc
