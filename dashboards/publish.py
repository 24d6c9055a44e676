"""Dashboards to JSON files for provisioning, or to an existing Grafana over its HTTP API.

``build`` renders every dashboard of :mod:`dashboards.boards` in one language to a
stable JSON text (sorted keys, so a rebuild of unchanged code changes no byte and the
committed files can be checked against a fresh build); ``build_all`` does it for every
shipped language (or those asked for), which ``write`` and ``push`` publish. ``push``
publishes them with ``grafana-client`` into one folder, overwriting the previous version
of each uid.

>>> docs = build()
>>> sorted(docs) == sorted(uid for uid, _ in DASHBOARDS)
True
>>> json.loads(docs["homecare-elder"])["uid"]
'homecare-elder'
>>> json.loads(build(language="zh-CN")["homecare-elder-zh-cn"])["title"]
'居家养老：老人'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.boards import DASHBOARDS, ELDER_UID, elder_dashboard, uid_for
from dashboards.names import Names, with_names
from homecare.errors import DeliveryError
from homecare.i18n import available, translator

log = logging.getLogger(__name__)

FOLDER_UID = "homecare"
FOLDER_TITLE = "Homecare"


def build(
    *, utc_offset_h: float = 0.0, language: str | None = None, names: Names | None = None
) -> dict[str, str]:
    """Every dashboard's JSON text in one language (default English), by uid; hours of
    day in the site's local time; people by name where ``names`` (from the registry)
    knows them, else by id."""
    tr = translator(language)
    out = {}
    for uid, make in DASHBOARDS:
        dash = elder_dashboard(utc_offset_h, tr) if uid == ELDER_UID else make(tr)
        doc = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
        text = json.dumps(with_names(doc, names) if names else doc, indent=2, sort_keys=True)
        out[uid_for(uid, tr.language)] = text + "\n"
    return out


def build_all(
    *,
    utc_offset_h: float = 0.0,
    languages: Sequence[str] | None = None,
    names: Names | None = None,
) -> dict[str, str]:
    """:func:`build` for each language (default: every shipped one)."""
    out: dict[str, str] = {}
    for language in languages or available():
        out |= build(utc_offset_h=utc_offset_h, language=language, names=names)
    return out


def write(
    folder: Path,
    *,
    utc_offset_h: float = 0.0,
    languages: Sequence[str] | None = None,
    names: Names | None = None,
) -> list[Path]:
    """Write ``<uid>.json`` for each dashboard into ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    built = build_all(utc_offset_h=utc_offset_h, languages=languages, names=names)
    for uid, text in built.items():
        path = folder / f"{uid}.json"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


class PushError(DeliveryError):
    """Grafana refused a dashboard or could not be reached; the message says which."""


def push(
    url: str,
    token: str,
    *,
    timeout_s: float = 10.0,
    utc_offset_h: float = 0.0,
    languages: Sequence[str] | None = None,
    names: Names | None = None,
) -> list[dict[str, Any]]:
    """Create the folder if missing and publish every dashboard into it, overwriting.

    Returns Grafana's answer per dashboard (uid, url, version).
    """
    api = GrafanaApi.from_url(url=url, credential=token, timeout=timeout_s)
    try:
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        answers = []
        built = build_all(utc_offset_h=utc_offset_h, languages=languages, names=names)
        for uid, text in built.items():
            answer = api.dashboard.update_dashboard(
                {"dashboard": json.loads(text), "folderUid": FOLDER_UID, "overwrite": True,
                 "message": "homecare dashboards push"}
            )
            log.info("pushed dashboard %s (version %s)", uid, answer.get("version"))
            answers.append(answer)
    except GrafanaException as exc:
        raise PushError(f"Grafana at {url} answered {exc.status_code or 'nothing'}: {exc}") from exc
    except niquests.exceptions.RequestException as exc:  # not every transport error is wrapped
        raise PushError(f"Grafana at {url} unreachable: {exc}") from exc
    return answers
