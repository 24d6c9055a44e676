"""The elder registry: who the elders are, who to tell, and the escalation policy.

One YAML file, validated by pydantic (unknown keys are refused, so a typo is an error,
not a silently ignored setting). :class:`RegistryFile` reloads it when it changes; an
invalid file is reported naming the field, and the registry in force stays in force.

Names, addresses and phone numbers live only here, never in telemetry. Contacts'
acknowledgement tokens are not in the file at all: each is an HMAC of the contact id
under a secret from the environment (:func:`ack_token`), so the file may be shared
with care staff without handing out the right to acknowledge.

>>> reg = Registry.model_validate({"provider": {"call_centre": "arc"},
...     "contacts": [{"id": "arc", "name": "ARC", "role": "call_centre",
...                   "channels": [{"kind": "call_centre", "address": "https://arc/alarm"}]}]})
>>> [s.after_s for s in reg.ladder("critical", 2).steps]
[0.0, 60.0]
>>> ack_token(b"k", "anna")[:8]
'76fad479'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from escalation.notification import ChannelKind, ElderCard, Recipient
from homecare.contract import Id, Severity
from homecare.errors import ConfigError
from homecare.i18n import valid_language

log = logging.getLogger(__name__)

Role = Literal["family", "care_worker", "call_centre", "supervisor", "device_desk"]
Target = Literal["call_centre", "supervisor", "device_desk", "first_contact", "next_contact"]
"""Who a rung of the ladder tells: a provider contact, or the elder's own contacts in
order (``first_contact``, then each ``next_contact`` the next one, wrapping round)."""

PERSONAL_ROLES = frozenset({"family", "care_worker"})
_QUIET = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML has it: a registry of thousands of elders loads 10x faster."""


class RegistryError(ConfigError):
    """The registry file cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r}") from exc
    return value


TimeZone = Annotated[str, Field(description="IANA timezone, e.g. Europe/London")]
Language = Annotated[
    str,
    AfterValidator(valid_language),
    Field(description="A shipped language, e.g. zh-CN or en (homecare/locales)."),
]
Hotline = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 ()-]{1,24}$",
                               description="A phone number, e.g. 12349.")]  # fmt: skip


class ContactChannel(_Strict):
    kind: ChannelKind
    address: str = Field(min_length=3, description="Email address or webhook URL.")


class Contact(_Strict):
    id: Id
    name: str = Field(min_length=1)
    role: Role
    channels: list[ContactChannel] = Field(min_length=1)
    quiet_hours: str | None = Field(None, description="HH:MM-HH:MM, local time; may wrap.")
    timezone: TimeZone | None = Field(None, description="Default: the elder's.")
    language: Language | None = Field(None, description="What they read; default: the site's.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return value if value is None else _timezone(value)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None and not _QUIET.match(value):
            raise ValueError(f"quiet_hours {value!r} is not HH:MM-HH:MM")
        return value

    def recipients(self) -> tuple[Recipient, ...]:
        return self._recipients

    @cached_property
    def _recipients(self) -> tuple[Recipient, ...]:  # the same for every message: made once
        return tuple(
            Recipient(
                id=self.id,
                name=self.name,
                role=self.role,
                channel=c.kind,
                address=c.address,
                language=self.language,
            )
            for c in self.channels
        )

    def quiet_until(self, now: float, timezone: str) -> float | None:
        """When the quiet hours running at ``now`` end (Unix s), or ``None`` if not quiet.

        >>> c = Contact(id="a", name="A", role="family", quiet_hours="22:00-07:00",
        ...             channels=[{"kind": "email", "address": "a@b.c"}])
        >>> c.quiet_until(1_700_000_000.0, "UTC")  # 22:13 UTC
        1700031600.0
        >>> c.quiet_until(1_700_000_000.0 + 12 * 3600, "UTC") is None
        True
        """
        if self.quiet_hours is None:
            return None
        m = _QUIET.match(self.quiet_hours)
        assert m is not None
        start = int(m[1]) * 60 + int(m[2])
        end = int(m[3]) * 60 + int(m[4])
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone or timezone))
        minute = local.hour * 60 + local.minute
        quiet = start <= minute < end if start <= end else minute >= start or minute < end
        if not quiet:
            return None
        day = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
        if day <= local:
            day += timedelta(days=1)
        return day.timestamp()


class Elder(_Strict):
    id: Id = Field(description="Pseudonymous id, as in the telemetry topics.")
    display_name: str = Field(min_length=1)
    site: Id
    address: str = Field(min_length=1, description="Address or room, for responders.")
    phone: str | None = None
    timezone: TimeZone | None = Field(None, description="Default: the site's, else UTC.")
    care_level: int = Field(2, ge=1, le=4)
    devices: list[Id] = Field(default_factory=list)
    contacts: list[Id] = Field(
        default_factory=list, description="Family and care workers, in the order to call."
    )
    living_alone: bool = Field(False, description="Lives alone (proactive care's groups).")
    hardship: bool = Field(
        False, description="In special hardship: the programme's list for regular visits."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return value if value is None else _timezone(value)

    def card(self, site: Provider | None = None) -> ElderCard:
        """What a message says of the elder; ``site`` (:meth:`Registry.provider_for`) gives
        the time zone, language and hotline the elder's own entry leaves out."""
        return ElderCard(
            id=self.id,
            site=self.site,
            display_name=self.display_name,
            address=self.address,
            phone=self.phone,
            timezone=self.timezone or (site.timezone if site else None) or "UTC",
            care_level=self.care_level,
            language=site.language if site else None,
            hotline=site.hotline if site else None,
        )


class Step(_Strict):
    after_s: float = Field(ge=0, description="Seconds after the ladder starts.")
    to: list[Target] = Field(min_length=1)


class Ladder(_Strict):
    """One severity's ladder: rungs in time order; the last repeats every ``repeat_s``."""

    steps: list[Step] = Field(min_length=1)
    repeat_s: float | None = Field(None, gt=0)
    batch_s: float | None = Field(
        None, gt=0, description="Collect alerts and send them together this often (info)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        times = [s.after_s for s in self.steps]
        if times != sorted(times):
            raise ValueError("steps must be in order of after_s")
        return self

    def step(self, i: int) -> tuple[float, Step] | None:
        """When rung ``i`` is due (seconds after the start) and what it does."""
        if i < len(self.steps):
            return self.steps[i].after_s, self.steps[i]
        if self.repeat_s is None:
            return None
        return self.steps[-1].after_s + (i - len(self.steps) + 1) * self.repeat_s, self.steps[-1]

    def contact_index(self, i: int) -> int:
        """Which of the elder's contacts ``first_contact``/``next_contact`` mean at rung ``i``."""
        n = -1
        for k in range(i + 1):
            rung = self.step(k)
            assert rung is not None
            for target in rung[1].to:
                if target == "first_contact":
                    n = max(n, 0)
                elif target == "next_contact":
                    n += 1
        return max(n, 0)


def _ladder(*steps: tuple[float, list[Target]], **kw: float) -> Ladder:
    return Ladder(steps=[Step(after_s=t, to=to) for t, to in steps], **kw)


class Policy(_Strict):
    """The issue's defaults; a care provider overrides any of them in the file."""

    critical: Ladder = _ladder(
        (0, ["call_centre", "first_contact"]), (60, ["next_contact", "supervisor"]), repeat_s=60
    )
    warning: Ladder = _ladder((0, ["first_contact"]), (600, ["call_centre"]))
    info: Ladder = _ladder((0, ["device_desk"]), batch_s=900)
    operations: Ladder = Field(
        _ladder((0, ["call_centre", "supervisor"]), (900, ["supervisor"]), repeat_s=900),
        description="Operations alerts (site _ops: the platform is broken, e.g. a stream's "
        "source): provider contacts only, never an elder's family.",
    )

    @field_validator("operations")
    @classmethod
    def _provider_only(cls, ladder: Ladder) -> Ladder:
        personal = {t for s in ladder.steps for t in s.to} & {"first_contact", "next_contact"}
        if personal:
            raise ValueError(f"an operations ladder tells provider contacts only, not {personal}")
        if ladder.batch_s:
            raise ValueError("an operations ladder is not batched")
        return ladder


class PolicyOverride(_Strict):
    critical: Ladder | None = None
    warning: Ladder | None = None
    info: Ladder | None = None


PROVIDER_ROLES = ("call_centre", "supervisor", "device_desk")


class Provider(_Strict):
    """Who answers for the elders (the top-level ``provider``, or one site's), and the
    site's words: the language of a contact who named none, the time zone of an elder
    who named none, and the hotline families are told to call."""

    call_centre: Id
    supervisor: Id | None = None
    device_desk: Id | None = None
    language: Language | None = Field(None, description="Default: English.")
    timezone: TimeZone | None = Field(None, description="Default: UTC.")
    hotline: Hotline | None = Field(
        None, description="The elders' services line families may call, e.g. 12349."
    )
    coordinator: Id | None = Field(
        None, description="Who plans the site's visits: told of overdue visits and open "
        "follow-ups (proactive care)."
    )  # fmt: skip

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return value if value is None else _timezone(value)


class SiteProvider(Provider):
    """A site's own entry: anything it leaves out is the top-level provider's."""

    call_centre: Id | None = None  # type: ignore[assignment]


class Registry(_Strict):
    provider: Provider
    sites: dict[str, SiteProvider] = Field(
        default_factory=dict,
        description="A site served by another call centre or desk, or with its own language, "
        "time zone or hotline.",
    )
    elders: list[Elder] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    policy: Policy = Policy()
    care_levels: dict[Annotated[int, Field(ge=1, le=4)], PolicyOverride] = Field(
        default_factory=dict, description="Per care level, ladders that differ from the policy."
    )
    digest_hour: int | None = Field(
        9, ge=0, le=23, description="Local hour of the family's daily digest; null: none."
    )

    @model_validator(mode="after")
    def _references(self) -> Self:
        contacts = {c.id: c for c in self.contacts}
        if len(contacts) != len(self.contacts):
            raise ValueError("contacts: ids must be unique")
        if len({e.id for e in self.elders}) != len(self.elders):
            raise ValueError("elders: ids must be unique")
        for i, elder in enumerate(self.elders):
            for cid in elder.contacts:
                if cid not in contacts:
                    raise ValueError(f"elders.{i}.contacts: unknown contact {cid!r}")
                if contacts[cid].role not in PERSONAL_ROLES:
                    raise ValueError(f"elders.{i}.contacts: {cid!r} is not family or care worker")
        for where, provider in [("provider", self.provider)] + [
            (f"sites.{k}", v) for k, v in self.sites.items()
        ]:
            for role in (*PROVIDER_ROLES, "coordinator"):
                cid = getattr(provider, role)
                if cid is not None and cid not in contacts:
                    raise ValueError(f"{where}.{role}: unknown contact {cid!r}")
        return self

    @cached_property
    def _elders(self) -> dict[str, Elder]:  # a plain attribute once made: looked up per alert
        return {e.id: e for e in self.elders}

    @cached_property
    def _contacts(self) -> dict[str, Contact]:
        return {c.id: c for c in self.contacts}

    def elder(self, elder_id: str) -> Elder | None:
        return self._elders.get(elder_id)

    def contact(self, contact_id: str) -> Contact | None:
        return self._contacts.get(contact_id)

    @cached_property
    def _providers(self) -> dict[str, Provider]:
        base = self.provider.model_dump()
        return {
            site: Provider.model_validate(
                base | {k: v for k, v in own.model_dump().items() if v is not None}
            )
            for site, own in self.sites.items()
        }

    def provider_for(self, site: str) -> Provider:
        """The site's provider: its own entry over the top-level one."""
        return self._providers.get(site, self.provider)

    @cached_property
    def _cards(self) -> dict[str, ElderCard]:  # the same for every message: made once each
        return {}

    def card(self, elder: Elder) -> ElderCard:
        """The elder's card with their site's time zone, language and hotline."""
        card = self._cards.get(elder.id)
        if card is None:
            card = self._cards[elder.id] = elder.card(self.provider_for(elder.site))
        return card

    def reader(self, elder_id: str, contact_id: str | None = None) -> tuple[str, str | None]:
        """How a page for this elder's family names them, and in which language: the
        contact's own, else the site's (``None``: the default). ``KeyError`` for an elder
        or contact not in the registry."""
        elder = self._elders[elder_id]
        contact = self._contacts[contact_id] if contact_id else None
        language = contact.language if contact else None
        return elder.display_name, language or self.provider_for(elder.site).language

    def ladder(self, severity: Severity | str, care_level: int) -> Ladder:
        override = self.care_levels.get(care_level)
        chosen: Ladder | None = getattr(override, str(severity)) if override else None
        default: Ladder = getattr(self.policy, str(severity))
        return chosen or default

    def may_acknowledge(self, contact_id: str, elder_id: str, site: str) -> bool:
        """Only the elder's own contacts and the site's provider contacts may acknowledge."""
        elder = self.elder(elder_id)
        if elder is not None and contact_id in elder.contacts:
            return True
        provider = self.provider_for(site)
        return contact_id in {getattr(provider, role) for role in PROVIDER_ROLES}


def error_text(path: Path, exc: ValidationError) -> str:
    """One line per problem, each naming the field (``elders.3.care_level``)."""
    lines = [
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
    ]
    return f"registry {path} is invalid: " + "; ".join(lines)


def load_registry(path: Path) -> Registry:
    try:
        data = yaml.load(path.read_text(), Loader=SafeLoader)
    except OSError as exc:
        raise RegistryError(f"registry {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"registry {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"registry {path} must be a mapping (provider, elders, contacts)")
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(error_text(path, exc)) from exc


class RegistryFile:
    """The registry in force, reloaded when the file changes; a bad file changes nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load_registry(path)
        self.error: str | None = None
        self.reloads = 0
        self._seen = self._stamp()

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def poll(self) -> bool:
        """Reload if the file changed; ``True`` when a new registry is in force."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            self.current = load_registry(self.path)
        except RegistryError as exc:
            self.error = str(exc)
            log.error("%s; the previous registry stays in force", exc)
            return False
        self.error = None
        self.reloads += 1
        log.info(
            "registry reloaded: %d elders, %d contacts",
            len(self.current.elders),
            len(self.current.contacts),
        )
        return True


def remove_elder(path: Path, elder_id: str) -> bool:
    """Erase an elder, and the contacts no other elder has, from the registry file.

    The file is rewritten atomically (comments are not kept); ``False`` if the elder
    was not in it. A running ``homecare escalate`` picks the change up by itself.
    """
    data = yaml.safe_load(path.read_text()) or {}
    elders = data.get("elders") or []
    gone = [e for e in elders if isinstance(e, dict) and e.get("id") == elder_id]
    if not gone:
        return False
    data["elders"] = [e for e in elders if e not in gone]
    still = {c for e in data["elders"] for c in (e.get("contacts") or [])}
    still |= _named(data.get("provider")) | _named(data.get("sites"))  # shared contacts
    theirs = {c for e in gone for c in (e.get("contacts") or [])} - still
    data["contacts"] = [c for c in data.get("contacts") or [] if c.get("id") not in theirs]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    os.replace(tmp, path)
    return True


def _named(section: Any) -> set[str]:
    """Every string in a section of the file: the contact ids it refers to, and more."""
    if isinstance(section, str):
        return {section}
    if isinstance(section, dict):
        return set().union(*map(_named, section.values()))
    if isinstance(section, list):
        return set().union(*map(_named, section))
    return set()


def ack_token(secret: bytes, contact_id: str) -> str:
    """A contact's acknowledgement token: HMAC-SHA256 of the id, so none is ever stored."""
    return hmac.new(secret, contact_id.encode(), hashlib.sha256).hexdigest()[:32]


def token_valid(secret: bytes, contact_id: str, token: str) -> bool:
    return hmac.compare_digest(ack_token(secret, contact_id), token)
