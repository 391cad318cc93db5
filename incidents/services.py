"""Writes of the incident register: register, link, classify (the Art. 73 clock), report to the
authority, close; and the worker's clock check (a reminder at half time, the overdue record).

Each call checks the actor's role in the incident's project, changes the row and appends its
ledger entry in one transaction. Free text goes to the ledger sealed in the vault under the
incident's ``text_ref`` (it may name the people harmed); the authority's reference and the
classification are recorded in clear."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audits.ledger.models import DataSubjectKey
from audits.ledger.services import ERASED, Subject, data_subject_erase, ledger_append, vault_seal
from common.errors import Conflict, DomainError, NotFound, PermissionDenied
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held, require_project_role
from governance.roles import Role
from incidents import rules
from incidents.models import FREE_TEXT_FIELDS, Incident, IncidentState, SeriousKind
from serving.models import Deployment
from systems.models import AISystem

# Who registers an incident and links what it concerns: every member who may act (auditors read).
REGISTER_ROLES = frozenset(set(Role) - {Role.AUDITOR})
# Who classifies, reports to the authority and closes.
OFFICER_ROLES = frozenset({Role.COMPLIANCE_OFFICER, Role.PLATFORM_ADMIN})
MAX_TITLE = 200
MAX_TEXT = 10000
MAX_REFERENCE = 200


def invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid_input", f"{field}: {message}", fields={field: [message]})


def subject(incident: Incident) -> Subject:
    return Subject(type="incident", id=str(incident.pk))


def _require_member(actor: Any, project: Project, what: str) -> None:
    """404 for someone with no role in the project (the incident is not theirs to know of); 403
    naming the roles for an auditor."""
    roles = project_roles_held(actor, project)
    if not (is_platform_admin(actor) or roles):
        raise NotFound("not_found", f"no project {project.slug!r}")
    if not (is_platform_admin(actor) or roles & REGISTER_ROLES):
        names = ", ".join(sorted(r.value for r in REGISTER_ROLES))
        raise PermissionDenied(
            "permission_denied", f"{what} needs one of {names} in {project.slug} (auditors are read-only)"
        )


def _require_officer(actor: Any, project: Project, what: str) -> None:
    require_project_role(actor, project, set(OFFICER_ROLES), what)


def _moment(field: str, value: Any, *, now: datetime, not_before: datetime | None = None) -> datetime:
    if not isinstance(value, datetime):
        raise invalid(field, f"a datetime is needed, got {type(value).__name__}")
    if timezone.is_naive(value):
        raise invalid(field, f"must be timezone-aware (with its UTC offset), got {value.isoformat()}")
    if value > now + timedelta(minutes=5):
        raise invalid(field, f"{value.isoformat()} is in the future")
    if value.year < 2024:
        raise invalid(field, f"{value.isoformat()} is before the AI Act (2024)")
    if not_before is not None and value < not_before:
        raise invalid(field, f"{value.isoformat()} is before {not_before.isoformat()}")
    return value


def _text(field: str, value: Any, *, max_length: int = MAX_TEXT, required: bool = True) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"text is needed, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise invalid(field, "may not be blank")
    if len(value) > max_length:
        raise invalid(field, f"at most {max_length} characters, got {len(value)}")
    return value


def _sealed(incident: Incident, **texts: str) -> dict[str, Any]:
    return {name: vault_seal(subject_ref=incident.text_ref, value=text) for name, text in texts.items()}


def _of_project(project: Project, ai_systems: Iterable[int], deployments: Iterable[int]) -> tuple[list[Any], list[Any]]:
    """The systems and deployments named, all of ``project``; a 400 naming every id that is not
    one of the project's (another project's object reads like none at all)."""
    system_ids, deployment_ids = sorted(set(ai_systems)), sorted(set(deployments))
    systems = list(AISystem.objects.filter(project=project, pk__in=system_ids))
    found = list(Deployment.objects.filter(project=project, pk__in=deployment_ids))
    errors: dict[str, list[str]] = {}
    missing = sorted(set(system_ids) - {s.pk for s in systems})
    if missing:
        errors["ai_systems"] = [f"no AI system {pk} in project {project.slug}" for pk in missing]
    missing = sorted(set(deployment_ids) - {d.pk for d in found})
    if missing:
        errors["deployments"] = [f"no deployment {pk} in project {project.slug}" for pk in missing]
    if errors:
        message = "; ".join(f"{field}: {', '.join(problems)}" for field, problems in errors.items())
        raise DomainError("invalid_input", message, fields=errors)
    return systems, found


def _locked(incident: Incident) -> Incident:
    return Incident.objects.select_for_update().select_related("project").get(pk=incident.pk)


def _require_state(incident: Incident, states: Iterable[str], doing: str) -> None:
    states = tuple(states)
    if incident.state not in states:
        raise Conflict(
            "invalid_transition", f"{incident.reference} is {incident.state}; {doing} needs it {' or '.join(states)}"
        )


def _links(incident: Incident) -> dict[str, list[int]]:
    return {
        "ai_systems": sorted(incident.ai_systems.values_list("pk", flat=True)),
        "deployments": sorted(incident.deployments.values_list("pk", flat=True)),
    }


def incident_register(
    *,
    actor: Any,
    project: Project,
    title: str,
    description: str,
    aware_at: datetime,
    occurred_at: datetime | None = None,
    ai_systems: Iterable[int] = (),
    deployments: Iterable[int] = (),
) -> Incident:
    """Register an incident of ``project``: any member but an auditor may. ``aware_at`` is when
    the provider became aware of it (the Art. 73 clock starts there once it is classified
    serious); ``occurred_at``, when known, may not follow it. ``ai_systems`` and ``deployments``
    (ids) must be the project's own: any other is refused by id (400), nothing registered.

    The title and description are sealed in the ledger (vault reference ``text_ref``)."""
    _require_member(actor, project, "registering an incident")
    now = timezone.now()
    title = _text("title", title, max_length=MAX_TITLE)
    description = _text("description", description)
    aware_at = _moment("aware_at", aware_at, now=now)
    if occurred_at is not None:
        occurred_at = _moment("occurred_at", occurred_at, now=now)
        if occurred_at > aware_at:
            raise invalid("occurred_at", "the incident cannot have occurred after the provider became aware of it")
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # numbers are given one at a time
        systems, found = _of_project(project, ai_systems, deployments)
        number = (Incident.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
        incident = Incident.objects.create(
            project=project, number=number, title=title, description=description, aware_at=aware_at,
            occurred_at=occurred_at, reported_by=actor, text_ref=f"incident-{uuid.uuid4().hex}",
        )  # fmt: skip
        incident.ai_systems.set(systems)
        incident.deployments.set(found)
        ledger_append(
            actor=actor, action="incident.registered", subject=subject(incident),
            payload={
                "project": project.slug, "number": number, "aware_at": aware_at.isoformat(),
                "occurred_at": occurred_at.isoformat() if occurred_at else None, **_links(incident),
                **_sealed(incident, title=title, description=description),
            },
        )  # fmt: skip
    return incident


def incident_link(
    *, actor: Any, incident: Incident, ai_systems: Iterable[int] = (), deployments: Iterable[int] = ()
) -> Incident:
    """Add AI systems and deployments (ids, of the incident's project only) to what the incident
    concerns. Links are only added, never removed; those already there are no change. A closed
    incident is not changed (409)."""
    _require_member(actor, incident.project, "linking an incident")
    with transaction.atomic():
        incident = _locked(incident)
        _require_state(incident, (IncidentState.OPEN, IncidentState.REPORTED), "linking")
        systems, found = _of_project(incident.project, ai_systems, deployments)
        before = _links(incident)
        new_systems = [s for s in systems if s.pk not in before["ai_systems"]]
        new_deployments = [d for d in found if d.pk not in before["deployments"]]
        if not (new_systems or new_deployments):
            return incident
        incident.ai_systems.add(*new_systems)
        incident.deployments.add(*new_deployments)
        ledger_append(
            actor=actor, action="incident.linked", subject=subject(incident),
            payload={
                "added": {"ai_systems": [s.pk for s in new_systems], "deployments": [d.pk for d in new_deployments]},
                **_links(incident),
            },
        )  # fmt: skip
    return incident


def incident_classify(*, actor: Any, incident: Incident, serious: bool, serious_kind: str = "") -> Incident:
    """Classify the incident (a compliance officer or platform admin of its project): serious,
    with what makes it so (a ``SeriousKind``), or not. A serious incident's report is due on the
    Art. 73 clock from ``aware_at`` (``rules.CLOCKS``); one that is not has no clock.

    Re-classifying recomputes the due date from ``aware_at``; when the date changes, the
    worker's half-time reminder and overdue record are cleared so that it judges the new date
    (the earlier entries stay in the ledger). A reported incident cannot become not serious, and
    a closed one is not changed (409)."""
    _require_officer(actor, incident.project, "classifying an incident")
    if not isinstance(serious, bool):
        raise invalid("serious", f"true or false, got {serious!r}")
    if serious and serious_kind not in SeriousKind.values:
        kinds = "; ".join(f"{value} ({label})" for value, label in SeriousKind.choices)
        raise invalid("serious_kind", f"a serious incident needs what makes it serious, one of: {kinds}")
    if not serious and serious_kind:
        raise invalid("serious_kind", "leave it empty for an incident that is not serious")
    with transaction.atomic():
        incident = _locked(incident)
        _require_state(incident, (IncidentState.OPEN, IncidentState.REPORTED), "classifying")
        if not serious and incident.state == IncidentState.REPORTED:
            raise Conflict("already_reported", f"{incident.reference} was reported as serious; it stays serious")
        previous = {
            "serious": incident.serious, "serious_kind": incident.serious_kind,
            "report_due_at": incident.report_due_at.isoformat() if incident.report_due_at else None,
        }  # fmt: skip
        due = rules.report_due(incident.aware_at, serious=serious, kind=serious_kind)
        if due != incident.report_due_at:
            incident.reminded_at = incident.overdue_recorded_at = None
        incident.serious, incident.serious_kind, incident.report_due_at = serious, serious_kind, due
        incident.classified_by, incident.classified_at = actor, timezone.now()
        incident.save(
            update_fields=["serious", "serious_kind", "report_due_at", "classified_by", "classified_at",
                           "reminded_at", "overdue_recorded_at"]
        )  # fmt: skip
        clock = rules.clock_of(serious_kind) if serious else None
        ledger_append(
            actor=actor, action="incident.classified", subject=subject(incident),
            payload={
                "serious": serious, "serious_kind": serious_kind, "aware_at": incident.aware_at.isoformat(),
                "report_due_at": due.isoformat() if due else None,
                "clock": {"days": clock.days, "article": clock.article} if clock else None,
                "previous": previous if previous["serious"] is not None else None,
            },
        )  # fmt: skip
    return incident


def incident_report_to_authority(
    *, actor: Any, incident: Incident, reported_at: datetime, reference: str, complete: bool = True
) -> Incident:
    """Record a report of a serious incident to the market surveillance authority: when it was
    made and the authority's reference. Art. 73(5) allows an initial, incomplete report followed
    by a complete one: ``complete=False`` records the initial one (the deadline is met by it),
    a later call with ``complete=True`` the complete one. The first report moves the incident to
    ``reported`` and is ``authority_reported_at``; the ledger says whether it was late.

    Refused (409) for an incident not classified yet, one that is not serious, one already
    reported completely, or one closed."""
    _require_officer(actor, incident.project, "reporting an incident to the authority")
    reference = _text("reference", reference, max_length=MAX_REFERENCE)
    if not isinstance(complete, bool):
        raise invalid("complete", f"true or false, got {complete!r}")
    with transaction.atomic():
        incident = _locked(incident)
        _require_state(incident, (IncidentState.OPEN, IncidentState.REPORTED), "reporting")
        if incident.serious is None:
            raise Conflict("not_classified", f"classify {incident.reference} (serious or not) before reporting it")
        if not incident.serious:
            raise Conflict("not_serious", f"{incident.reference} is not serious: Art. 73 asks no report of it")
        if incident.authority_completed_at is not None:
            raise Conflict(
                "already_reported", f"{incident.reference}'s complete report was recorded on "
                f"{incident.authority_completed_at:%Y-%m-%d}",
            )  # fmt: skip
        first = incident.authority_reported_at is None
        reported_at = _moment("reported_at", reported_at, now=timezone.now(), not_before=incident.aware_at)
        if not first and reported_at < incident.authority_reported_at:
            raise invalid("reported_at", f"before the initial report of {incident.authority_reported_at.isoformat()}")
        if first:
            incident.authority_reported_at, incident.state = reported_at, IncidentState.REPORTED
        if complete:
            incident.authority_completed_at = reported_at
        incident.authority_reference = reference
        incident.save(update_fields=["authority_reported_at", "authority_completed_at", "authority_reference", "state"])
        due = incident.report_due_at
        ledger_append(
            actor=actor, action="incident.reported", subject=subject(incident),
            payload={
                "reported_at": reported_at.isoformat(), "reference": reference, "complete": complete,
                "initial": first, "report_due_at": due.isoformat() if due else None,
                "late": bool(first and due and reported_at > due),
            },
        )  # fmt: skip
    return incident


def incident_close(*, actor: Any, incident: Incident, root_cause: str, corrective_action: str) -> Incident:
    """Close the incident with its root cause and the corrective action taken (both required,
    sealed in the ledger). It must be classified first; a serious one closes only once its
    complete report to the authority is recorded (409 otherwise)."""
    _require_officer(actor, incident.project, "closing an incident")
    root_cause = _text("root_cause", root_cause)
    corrective_action = _text("corrective_action", corrective_action)
    with transaction.atomic():
        incident = _locked(incident)
        _require_state(incident, (IncidentState.OPEN, IncidentState.REPORTED), "closing")
        if incident.serious is None:
            raise Conflict("not_classified", f"classify {incident.reference} (serious or not) before closing it")
        if incident.serious and incident.authority_reported_at is None:
            raise Conflict(
                "not_reported", f"{incident.reference} is serious: report it to the authority before closing it "
                f"(due {incident.report_due_at:%Y-%m-%d %H:%M} UTC)",
            )  # fmt: skip
        if incident.serious and incident.authority_completed_at is None:
            raise Conflict(
                "report_incomplete", f"{incident.reference}'s report was initial (Art. 73(5)): record the complete "
                "report before closing it",
            )  # fmt: skip
        incident.root_cause, incident.corrective_action = root_cause, corrective_action
        incident.state, incident.closed_at, incident.closed_by = IncidentState.CLOSED, timezone.now(), actor
        incident.save(update_fields=["root_cause", "corrective_action", "state", "closed_at", "closed_by"])
        ledger_append(
            actor=actor, action="incident.closed", subject=subject(incident),
            payload={"serious": incident.serious,
                     **_sealed(incident, root_cause=root_cause, corrective_action=corrective_action)},
        )  # fmt: skip
    return incident


def _blanked(text: str, spans: list[tuple[int, int]], max_length: int) -> str:
    for start, end in reversed(spans):  # from the end, so earlier spans keep their offsets
        text = text[:start] + ERASED + text[end:]
    return text[:max_length]


def incident_text_erase(
    *, actor: Any, incident: Incident, find: Callable[[str], list[tuple[int, int]]], reason: str
) -> list[str]:
    """Blank what ``find`` finds (a person's identifiers) in the incident's free text, for an
    erasure (GDPR Art. 17): each span becomes ``[erased]`` on the row; the ledger's sealed copies
    of the text, all under the incident's ``text_ref``, are crypto-shredded with that reference's
    key (``data_subject_erase``, journalled, so a restore shreds it again); the blanked text is
    sealed afresh under a new reference (``incident.text_erased``; a field blanked whole is
    recorded as it reads), so the ledger still holds what the register says. Only a compliance
    officer of the project (or a platform admin) may. Returns the fields changed; none changed,
    nothing is written."""
    _require_officer(actor, incident.project, "erasing personal data from an incident")
    if not reason.strip():
        raise invalid("reason", "may not be blank")
    with transaction.atomic():
        incident = _locked(incident)
        texts = {name: getattr(incident, name) for name in FREE_TEXT_FIELDS}
        spans = {name: found for name, text in texts.items() if (found := find(text))}
        changed = list(spans)
        if not changed:
            return []
        for name, found in spans.items():
            texts[name] = _blanked(texts[name], found, MAX_TITLE if name == "title" else MAX_TEXT)
            setattr(incident, name, texts[name])
        shredded, incident.text_ref = incident.text_ref, f"incident-{uuid.uuid4().hex}"
        incident.save(update_fields=[*changed, "text_ref"])
        ledger_append(
            actor=actor, action="incident.text_erased", subject=subject(incident),
            payload={"fields": changed, "reason": reason, "previous_text_ref": shredded,
                     # A text blanked whole names nobody: in clear (a restore blanks so without the vault's KEK).
                     **{name: text for name, text in texts.items() if text == ERASED},
                     **_sealed(incident, **{name: text for name, text in texts.items() if text and text != ERASED})},
        )  # fmt: skip
        if DataSubjectKey.objects.filter(ref=shredded, key__isnull=False).exists():  # not shredded before
            data_subject_erase(actor=actor, subject_ref=shredded, reason=reason)
    return changed


RESTORE_REASON = "an erasure re-applied after a restore: the backup predates it"


def incident_text_erase_restored(refs: set[str]) -> list[str]:
    """A restore re-applies the erasure journal (``audits.ledger.backup.journal``): an incident
    whose ``text_ref`` is among ``refs`` had its text blanked by an erasure after the backup was
    taken, and the backup brought back the text from before it. The identifiers that erasure
    blanked are shredded, so which words named the person can no longer be known: the whole of
    the incident's free text is blanked, through ``incident_text_erase`` (the system account),
    which shreds the reference's key again. Returns what it did, in words, for the restore."""
    from django.contrib.auth import get_user_model

    from governance.permissions import SYSTEM_USERNAME

    incidents = list(Incident.objects.filter(text_ref__in=refs).select_related("project").order_by("pk"))
    if not incidents:
        return []
    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    for incident in incidents:
        incident_text_erase(
            actor=system, incident=incident, find=lambda text: [(0, len(text))] if text else [], reason=RESTORE_REASON
        )
    names = ", ".join(str(incident) for incident in incidents)
    return [
        f"incidents: {len(incidents)} whose free text an erasure blanked after this backup was taken ({names}): "
        "their free text is blanked whole (which words named the person is shredded with the erasure)"
    ]


def incident_clocks_check(*, actor: Any, now: datetime | None = None) -> dict[str, list[int]]:
    """The worker's pass over the clocks of serious incidents not reported yet: once half the
    clock has run, remind the project's compliance officers (``incident.reminded``); once the
    deadline has passed, record it (``incident.overdue``) and tell them. Each is recorded once
    per due date: a conditional update on ``reminded_at`` / ``overdue_recorded_at`` claims it, so
    two workers (or two runs) never record it twice. Mails go after commit. Returns the ids
    reminded and recorded overdue by this call."""
    now = timezone.now() if now is None else now
    done: dict[str, list[int]] = {"reminded": [], "overdue": []}
    waiting = Incident.objects.filter(
        serious=True, authority_reported_at__isnull=True, report_due_at__isnull=False,
        state=IncidentState.OPEN,
    ).select_related("project")  # fmt: skip
    for incident in waiting.filter(overdue_recorded_at__isnull=True, report_due_at__lt=now):
        with transaction.atomic():
            claimed = Incident.objects.filter(
                pk=incident.pk, overdue_recorded_at__isnull=True, authority_reported_at__isnull=True,
                report_due_at=incident.report_due_at,
            ).update(overdue_recorded_at=now)  # fmt: skip
            if not claimed:
                continue  # reported, re-classified or recorded by another run meanwhile
            incident.overdue_recorded_at = now
            ledger_append(
                actor=actor, action="incident.overdue", subject=subject(incident),
                payload={
                    "report_due_at": incident.report_due_at.isoformat(), "at": now.isoformat(),
                    "serious_kind": incident.serious_kind, "article": rules.clock_of(incident.serious_kind).article,
                },
            )  # fmt: skip
            transaction.on_commit(lambda i=incident: _notify_officers(i, overdue=True))
        done["overdue"].append(incident.pk)
    for incident in waiting.filter(reminded_at__isnull=True, overdue_recorded_at__isnull=True, report_due_at__gte=now):
        half = rules.reminder_due(incident.aware_at, incident.report_due_at)
        if half is None or now < half:
            continue
        with transaction.atomic():
            claimed = Incident.objects.filter(
                pk=incident.pk, reminded_at__isnull=True, authority_reported_at__isnull=True,
                report_due_at=incident.report_due_at,
            ).update(reminded_at=now)  # fmt: skip
            if not claimed:
                continue
            incident.reminded_at = now
            ledger_append(
                actor=actor, action="incident.reminded", subject=subject(incident),
                payload={"report_due_at": incident.report_due_at.isoformat(), "at": now.isoformat()},
            )  # fmt: skip
            transaction.on_commit(lambda i=incident: _notify_officers(i, overdue=False))
        done["reminded"].append(incident.pk)
    return done


def _notify_officers(incident: Incident, *, overdue: bool) -> None:
    """After commit: mail the project's compliance officers. The mail names the incident by its
    reference and link, never its text (which may name the people harmed)."""
    from django.core.mail import send_mail
    from guardian.shortcuts import get_users_with_perms

    holders = get_users_with_perms(incident.project, only_with_perms_in=[Role.COMPLIANCE_OFFICER.codename])
    recipients = sorted({u.email for u in holders if u.email})
    if not recipients:
        return
    clock = rules.clock_of(incident.serious_kind)
    what = "is OVERDUE for its report" if overdue else "is half-way through its reporting clock"
    send_mail(
        subject=f"Incident {incident.project.slug}/{incident.reference} {what}",
        message=(
            f"The serious incident {incident.reference} of project {incident.project.slug} "
            f"({SeriousKind(incident.serious_kind).label}) has not been reported to the market surveillance "
            f"authority.\nReport due: {incident.report_due_at:%Y-%m-%d %H:%M} UTC ({clock.article}: {clock.why}).\n"
            f"/api/v1/incidents/{incident.pk}\n"
        ),
        from_email=None,
        recipient_list=recipients,
        fail_silently=True,
    )
