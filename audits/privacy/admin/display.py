"""How the request pages say things: times and deadlines in the request's own time zone, the
state with what comes next, what the search found and what the erasure did as tables, and which
steps the services would accept now (the buttons offered; the services still decide)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from audits.privacy import deadlines as dl
from audits.privacy.models import (
    ACCESS_KINDS,
    ERASURE_KINDS,
    UNVERIFIED_KINDS,
    DataSubjectRequest,
    DeadlineFlag,
    ModelReview,
    RequestState,
)
from incidents.models import Incident
from registry.models import DatasetVersion

FLAG_CLASSES = {DeadlineFlag.ON_TIME: "dsr-ok", DeadlineFlag.DUE_SOON: "dsr-soon", DeadlineFlag.OVERDUE: "dsr-late"}


def local(moment: datetime | None, tz: str, *, zone: bool = True) -> str:
    """``moment`` as the office of the request reads it: "6 Dec 2026, 09:00 Europe/Berlin" (the
    zone left out with ``zone=False``, where a column says it)."""
    if moment is None:
        return "-"
    at = moment.astimezone(ZoneInfo(tz))
    return f"{at.day} {at:%b %Y, %H:%M} {tz}" if zone else f"{at.day} {at:%b %Y, %H:%M}"


def deadline(
    request: DataSubjectRequest, at: datetime, now: datetime, answered_at: datetime | None, *, compact: bool = False
) -> SafeString:
    """A deadline with days left or overdue, coloured by how near it is (the flag's colours).
    ``compact``: without the zone, the date and the days left on two lines (the list's cells)."""
    text = dl.describe(at, request.tz, now, answered_at=answered_at)
    if answered_at is not None:
        css = "dsr-late" if answered_at > at else "dsr-ok"
    else:
        css = FLAG_CLASSES[DeadlineFlag(dl.status(at, now))]
    if compact:
        due, left = text.split(" — ", 1)
        due = due.removesuffix(f" {request.tz}")
        return format_html('<span class="{}"><span class="dsr-nowrap">{}</span><br>{}</span>', css, due, left)
    return format_html('<span class="{}">{}</span>', css, text)


def list_deadline(request: DataSubjectRequest, now: datetime) -> SafeString:
    """The list's column: the response deadline of an open request (the confirmation's while it
    is owed and earlier), or how the closed one was answered. Two short lines, the date and the
    days left; the list has the request's time zone in a column of its own."""
    if not request.is_open:
        return deadline(request, request.respond_by, now, request.responded_at or now, compact=True)
    owed = request.respond_by
    if request.confirm_by is not None and request.receipt_confirmed_at is None and request.confirm_by < owed:
        return format_html("confirm receipt: {}", deadline(request, request.confirm_by, now, None, compact=True))
    return deadline(request, owed, now, None, compact=True)


def state_text(request: DataSubjectRequest) -> str:
    """The state in words, with what the request waits for."""
    state, found = request.state, request.findings.get("found")
    if request.kind in UNVERIFIED_KINDS and state in (RequestState.RECEIVED, RequestState.IDENTITY_VERIFIED):
        return (
            f"{request.get_state_display()}: act on it and complete the request (no identity verification: "
            "the CCPA regulations forbid requiring it for this kind)"
        )
    if state == RequestState.RECEIVED:
        return "received: verify the requester's identity next"
    if state == RequestState.IDENTITY_VERIFIED:
        return "identity verified: search for the person's data next"
    if state == RequestState.SEARCHED:
        if request.kind in ACCESS_KINDS:
            if request.package_issued_at:
                return "searched: the access package was issued; complete the request once it is sent"
            return "searched: issue the access package next"
        if request.kind in ERASURE_KINDS:
            if found:
                return "searched: the person's data was found; erase it next"
            return "searched: nothing found; complete the request (the requester is told no data is held)"
        return "searched: complete the request once the response is sent"
    if state == RequestState.ERASED:
        return "erased: the person's data is gone; complete the request once the requester is told"
    return request.get_state_display().lower()


def steps(request: DataSubjectRequest, now: datetime) -> list[str]:
    """The steps the services would accept now, in the order an officer takes them."""
    if not request.is_open:
        return []
    state = request.state
    erasure_owed = request.kind in ERASURE_KINDS and bool(request.findings.get("found")) and not request.erased_at
    offered = []
    if request.confirm_by is not None and request.receipt_confirmed_at is None:
        offered.append("confirm-receipt")
    unverified = request.kind in UNVERIFIED_KINDS  # never asked to verify (CCPA §7026(d), §7027(e))
    if state == RequestState.RECEIVED and not unverified:
        offered.append("verify-identity")
    searchable = (RequestState.RECEIVED,) if unverified else ()
    if state in (*searchable, RequestState.IDENTITY_VERIFIED, RequestState.SEARCHED):
        offered.append("search")
    if state == RequestState.SEARCHED and request.kind in ACCESS_KINDS:
        offered += ["access-letter", "access-package"]
    if state == RequestState.SEARCHED and erasure_owed:
        offered.append("erase")
    package_owed = request.kind in ACCESS_KINDS and not request.package_issued_at
    if (
        state == RequestState.ERASED
        or (state == RequestState.SEARCHED and not erasure_owed and not package_owed)
        or (unverified and state in (RequestState.RECEIVED, RequestState.IDENTITY_VERIFIED))
    ):
        offered.append("complete")
    if not request.extended and request.extension_notice_by is not None and now <= request.extension_notice_by:
        offered.append("extend")
    if state != RequestState.ERASED:
        offered += ["deny", "withdraw"]
    return offered


def via(how: str) -> str:
    """How a model version came to hold the data, as lineage records it ("training", "base N")."""
    if how.startswith("base "):
        return f"fine-tuned from model version {how.removeprefix('base ')}"
    return "trained on them" if how == "training" else how


def identifiers(request: DataSubjectRequest) -> str:
    # Kinds and the start of their keyed hashes, as the API shows them: never the values.
    return ", ".join(f"{h['kind']} (keyed hash {h['key_hash'][:12]}…)" for h in request.identifier_hashes)


def findings(request: DataSubjectRequest) -> dict[str, Any]:
    """The search's findings as table rows, with where each dataset version stands now."""
    found = request.findings or {}
    ids = [v["id"] for v in found.get("dataset_versions", [])]
    now_rows = {v.pk: v for v in DatasetVersion.objects.filter(pk__in=ids)}
    replaced_by = {r["old"]: r["new"] for r in (request.erasure or {}).get("replaced", [])}
    names = _version_names(replaced_by.values())
    versions = []
    for row in found.get("dataset_versions", []):
        version = now_rows.get(row["id"])
        if version is None or version.erased_at is None:
            status = "live"
        elif row["id"] in replaced_by:
            new = replaced_by[row["id"]]
            status = f"erased; replaced by {names[new]} (id {new})" if new else "erased; no record was left"
        else:
            status = f"erased ({version.erased_reason})"
        versions.append({**row, "kinds": ", ".join(row["kinds"]), "status": status})
    models = [
        {**m, "trained_on": ", ".join(map(str, m["trained_on"])), "via": via(m["via"])}
        for m in found.get("model_versions", [])
    ]
    return {
        "message": found.get("message", ""),
        "versions": versions,
        "models": models,
        "deployments": found.get("deployments", []),
        "unscanned": found.get("unscanned_versions", []),
        "incidents": _incident_rows(found.get("incidents", [])),
        "transcripts": found.get("transcripts", []),
    }


def incident_fields(fields: list[str]) -> str:
    """An incident's free-text fields by their names on its page ("description, root cause")."""
    return ", ".join(str(Incident._meta.get_field(name).verbose_name) for name in fields)


def _incident_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Incidents named by reference and the fields concerned, with a link to each."""
    return [
        {**row, "fields": incident_fields(row["fields"]),
         "url": reverse("admin:incidents_incident_change", args=[row["id"]])}
        for row in rows
    ]  # fmt: skip


def erasure(request: DataSubjectRequest) -> dict[str, Any] | None:
    """What the erasure did, as the request records it, with the versions' and reviews' names."""
    if not request.erased_at:
        return None
    done = request.erasure or {}
    replaced = done.get("replaced", [])
    names = _version_names([r["old"] for r in replaced] + [r["new"] for r in replaced if r["new"]])
    reviews = ModelReview.objects.filter(pk__in=done.get("model_reviews", [])).select_related("model_version__model")
    rows = [
        {"old": names[r["old"]], "old_id": r["old"], "new": names[r["new"]] if r["new"] else None,
         "new_id": r["new"], "removed": r["records_removed"]}
        for r in replaced
    ]  # fmt: skip
    return {
        "replaced": rows,
        "reviews": [
            {"review": review, "url": reverse("admin:privacy_modelreview_change", args=[review.pk])}
            for review in reviews.order_by("pk")
        ],
        "keys": len(done.get("vault_keys_shredded", [])),
        "incidents": _incident_rows(done.get("incidents", [])),
        "transcripts": done.get("transcripts", []),
    }


def _version_names(ids: Any) -> dict[int, str]:
    wanted = [i for i in ids if i]
    return {v.pk: str(v) for v in DatasetVersion.objects.filter(pk__in=wanted).select_related("dataset__project")}
