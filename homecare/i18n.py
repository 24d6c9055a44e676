"""Every text a person reads, in their language: gettext catalogues through Babel.

The words live in ``homecare/locales/<lang>/LC_MESSAGES/homecare.po`` (``en`` and
``zh_CN`` ship); a catalogue is compiled in memory by Babel the first time a language is
asked for, so there is no build step and no ``.mo`` to forget. Dropping in another
``<lang>/LC_MESSAGES/homecare.po`` adds a language without a code change
(``homecare i18n extract`` refreshes every catalogue from the code; ``homecare i18n
check`` fails while an entry is untranslated).

A :class:`Translator` carries one reader's language: its ``gettext`` (``_``),
``ngettext`` and ``pgettext``, and dates, weekdays, times and numbers in that locale
(Babel's CLDR data) in a given time zone. Code marks what it says with ``_("...")``
where ``_`` is ``translator(lang).gettext``, and tables of words with :func:`N_`,
translated where they are shown.

Languages are named as people write them (``zh-CN``, ``en``); the folder uses
gettext's ``zh_CN``.

>>> zh = translator("zh-CN")
>>> zh.gettext("Urgent")
'紧急'
>>> zh.date(1_700_000_000, "Asia/Shanghai", "full")
'2023年11月15日星期三'
>>> translator("en").number(4210), zh.number(4210.5, "#,##0.#")
('4,210', '4,210.5')
>>> translator("fr")
Traceback (most recent call last):
...
homecare.i18n.LanguageError: no catalogue for language 'fr' (shipped: en, zh-CN)
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from datetime import UTC, tzinfo
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations

from homecare.errors import ConfigError

__all__ = [
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LOCALES_DIR",
    "N_",
    "LanguageError",
    "Translator",
    "available",
    "catalogue_path",
    "language_tag",
    "translator",
    "valid_language",
    "zone",
]

log = logging.getLogger(__name__)

DOMAIN = "homecare"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LANGUAGE = "en"
"""The language of the code's own words (the msgids), and of a reader who named none."""

_Width = Literal["full", "long", "medium", "short"]


class LanguageError(ConfigError):
    """A language with no shipped catalogue, or one Babel does not know."""


def N_(message: str) -> str:
    """Mark a word for the catalogue where it is defined; translate it where it is shown."""
    return message


def language_tag(value: str) -> str:
    """``zh_CN``, ``zh-cn`` or ``zh-CN`` → ``zh-CN`` (the form the registry and options use).

    >>> language_tag("zh_cn"), language_tag("EN")
    ('zh-CN', 'en')
    """
    parts = value.replace("_", "-").split("-")
    return "-".join([parts[0].lower(), *(p.upper() if len(p) == 2 else p for p in parts[1:])])


def _folder(tag: str) -> str:
    return tag.replace("-", "_")


def catalogue_path(lang: str) -> Path:
    """Where a language's catalogue is (or goes)."""
    return LOCALES_DIR / _folder(language_tag(lang)) / "LC_MESSAGES" / f"{DOMAIN}.po"


def available() -> tuple[str, ...]:
    """Every language with a catalogue, as tags, sorted."""
    found = {
        language_tag(p.parent.parent.name) for p in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")
    }
    return tuple(sorted(found))


def valid_language(value: str) -> str:
    """The tag of a shipped language; :class:`LanguageError` (a ``ValueError`` too, for
    pydantic) naming the shipped ones otherwise."""
    tag = language_tag(value)
    if tag not in available():
        raise LanguageError(
            f"no catalogue for language {value!r} (shipped: {', '.join(available())})"
        )
    return tag


def zone(name: str | None) -> tzinfo:
    """An IANA time zone; UTC for none or an unknown name (a reader still gets a time)."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


class Translator:
    """One language's words and formats (see the module's docstring)."""

    def __init__(self, tag: str, translations: Translations, locale: Locale) -> None:
        self.language = tag
        self.locale = locale
        self._t = translations

    def __repr__(self) -> str:
        return f"Translator({self.language!r})"

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def pgettext(self, context: str, message: str) -> str:
        return str(self._t.pgettext(context, message))

    # -- formats --------------------------------------------------------------------------
    def _moment(self, ts: float | dt.datetime, timezone: str | tzinfo | None) -> dt.datetime:
        tz = timezone if isinstance(timezone, tzinfo) else zone(timezone)
        if isinstance(ts, dt.datetime):
            return ts.astimezone(tz) if ts.tzinfo else ts.replace(tzinfo=tz)
        return dt.datetime.fromtimestamp(ts, tz)

    def datetime(self, ts: float | dt.datetime, timezone: str | tzinfo | None, pattern: str) -> str:
        """A moment in a CLDR pattern (``EEEE d MMMM, HH:mm``): weekday and month names
        in this language. Patterns are words too: each caller's is in the catalogue."""
        return format_datetime(self._moment(ts, timezone), pattern, locale=self.locale)

    def date(
        self, ts: float | dt.datetime, timezone: str | tzinfo | None, width: _Width | str = "long"
    ) -> str:
        """The day of a moment: a CLDR width (``full``, ``long``…) or a pattern."""
        return format_date(self._moment(ts, timezone), width, locale=self.locale)

    def time(
        self, ts: float | dt.datetime, timezone: str | tzinfo | None, pattern: str = "HH:mm"
    ) -> str:
        return format_time(self._moment(ts, timezone), pattern, locale=self.locale)

    def number(self, value: float, pattern: str | None = None) -> str:
        """A number with this language's grouping and decimal signs."""
        return format_decimal(value, pattern, locale=self.locale)

    def percent(self, fraction: float) -> str:
        return format_percent(fraction, locale=self.locale)

    def join(self, items: list[str]) -> str:
        """``a, b and c`` / ``a、b和c``: a list in this language's words."""
        from babel.lists import format_list

        return format_list(items, locale=self.locale)


def _load(tag: str) -> tuple[Translations, Locale]:
    """Compile the catalogue in memory (Babel's own ``.mo`` writer; fuzzy entries are
    left out, as ``msgfmt`` does), and the locale its dates and numbers follow: the
    header's ``Language`` (English says ``en_GB``: "14 November, 23:13 CET"), else the
    folder's."""
    path = catalogue_path(tag)
    with path.open("rb") as f:
        catalog = read_po(f, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    try:
        locale = catalog.locale or Locale.parse(_folder(tag))
    except (UnknownLocaleError, ValueError) as exc:
        raise LanguageError(f"Babel knows no locale {tag!r}") from exc
    return Translations(buf, domain=DOMAIN), locale


@cache
def _translator(tag: str) -> Translator:
    translations, locale = _load(tag)
    return Translator(tag, translations, locale)


def translator(lang: str | None = None, *, fallback: bool = False) -> Translator:
    """The translator of a shipped language (``None``: the default); made once each.

    ``fallback``: a language with no catalogue (one removed since the registry was
    checked, say) gets the default's words and a warning, so a message still goes out."""
    try:
        return _translator(valid_language(lang or DEFAULT_LANGUAGE))
    except LanguageError:
        if not fallback:
            raise
        log.warning("no catalogue for language %r: %s words instead", lang, DEFAULT_LANGUAGE)
        return _translator(DEFAULT_LANGUAGE)
