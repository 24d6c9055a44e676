"""Keeping the catalogues of :mod:`homecare.i18n` in step with the code.

``homecare i18n extract`` reads every marked word (``_``, ``gettext``, ``ngettext``,
``pgettext``, ``N_``) from the packages that speak to people (:data:`SOURCES`, those
present), and merges it into each shipped catalogue: new words arrive untranslated
(English, the code's own language, is filled in), words the code no longer says are
dropped. ``homecare i18n extract --add fr`` starts a new language's catalogue.
``homecare i18n check`` lists what is missing: an untranslated or fuzzy entry, a word
the code says that a catalogue lacks, a translation that loses or invents a ``{name}``
placeholder. The same is the test that fails CI.

The standard tool does the same: ``pybabel extract -k N_ -k pgettext:1c,2 -o
homecare.pot homecare escalation dashboards certify`` then ``pybabel update -i
homecare.pot -d homecare/locales -D homecare``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from homecare.i18n import DEFAULT_LANGUAGE, DOMAIN, LOCALES_DIR, available, catalogue_path

__all__ = ["KEYWORDS", "SOURCES", "add_language", "problems", "template", "update"]

_ROOT = LOCALES_DIR.parents[1]
SOURCES = ("homecare", "escalation", "dashboards", "certify", "care")
"""The packages whose words people read (a missing one is skipped)."""
KEYWORDS: dict[str, tuple[int | tuple[int, str], ...] | None] = {
    "_": None,
    "gettext": None,
    "N_": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
}
_HEADER = """\
# The homecare words in {language}: every text a person reads (homecare/i18n.py).
# Refresh from the code with `homecare i18n extract`; `homecare i18n check` must pass.
#"""
_EPOCH = datetime(2026, 12, 7, tzinfo=UTC)
_PLACEHOLDER = re.compile(r"(?<!\{)\{([a-z_]*)\}")


def template() -> Catalog:
    """Every word the code says, as a template (``.pot``) catalogue."""
    catalog = Catalog(domain=DOMAIN, project="homecare", charset="utf-8", fuzzy=False)
    for package in SOURCES:
        folder = _ROOT / package
        if not folder.is_dir():
            continue
        found = extract_from_dir(
            folder, method_map=[("**.py", "python")], keywords=KEYWORDS,
            comment_tags=("Translators:",), strip_comment_tags=True,
        )  # fmt: skip
        for filename, lineno, message, comments, context in found:
            where = (f"{package}/{filename}", lineno)
            catalog.add(message, None, [where], auto_comments=comments, context=context)
    return catalog


def _read(lang: str) -> Catalog:
    with catalogue_path(lang).open("rb") as f:
        return read_po(f, domain=DOMAIN)


def _write(lang: str, catalog: Catalog) -> Path:
    path = catalogue_path(lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    if lang == DEFAULT_LANGUAGE:  # the code's own words are the English ones
        for message in catalog:
            if isinstance(message.id, tuple | list) and not all(message.string or ()):
                message.string = tuple(message.id)
            elif message.id and not message.string:
                message.string = message.id
    # A stable header: extracting again changes only the entries (no dates to merge).
    catalog.header_comment = _HEADER.format(language=catalog.locale_identifier or lang)
    catalog.project, catalog.version, catalog.msgid_bugs_address = "homecare", "1", ""
    catalog.copyright_holder = "the homecare telemetry authors"
    catalog.last_translator = catalog.language_team = "homecare maintainers"
    catalog.creation_date = catalog.revision_date = _EPOCH
    with path.open("wb") as f:
        write_po(f, catalog, width=96, ignore_obsolete=True, include_lineno=False)
    return path


def update() -> list[Path]:
    """Merge the code's words into every shipped catalogue (no fuzzy guesses: a changed
    word is untranslated until a person translates it)."""
    pot = template()
    out = []
    for lang in available():
        catalog = _read(lang)
        catalog.update(copy.deepcopy(pot), no_fuzzy_matching=True)  # it keeps the template's
        out.append(_write(lang, catalog))  # entries, which English then fills in
    return out


def add_language(lang: str, locale: str | None = None) -> Path:
    """A new language's catalogue, every entry waiting for its translation."""
    path = catalogue_path(lang)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    catalog = Catalog(
        locale=locale or path.parents[1].name, domain=DOMAIN, project="homecare", fuzzy=False
    )
    catalog.update(template(), no_fuzzy_matching=True)
    return _write(lang, catalog)


def _strings(message: Message) -> Iterator[tuple[str, str]]:
    ids = message.id if isinstance(message.id, tuple | list) else (message.id,)
    strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
    for i, s in enumerate(strings):
        yield ids[min(i, len(ids) - 1)], s or ""


def problems(pot: Catalog | None = None) -> list[str]:
    """What stops a catalogue being complete, one line each (empty: all is well)."""
    pot = pot if pot is not None else template()
    out: list[str] = []
    for lang in available():
        catalog = _read(lang)
        for wanted in pot:
            if wanted.id and catalog.get(wanted.id, wanted.context) is None:
                out.append(f"{lang}: missing {wanted.id!r} ({wanted.locations[0][0]})")
        for message in catalog:
            if not message.id:
                continue
            if message.fuzzy:
                out.append(f"{lang}: fuzzy {message.id!r}")
            for msgid, string in _strings(message):
                if not string:
                    out.append(f"{lang}: untranslated {msgid!r}")
                elif set(_PLACEHOLDER.findall(string)) != set(_PLACEHOLDER.findall(msgid)):
                    out.append(f"{lang}: placeholders differ in {msgid!r} → {string!r}")
    return out
