"""Reads of the governance app. Those that answer a caller take the user and return only what that
user may see; the services' own reads (``parties_of``, ``policy_set_recorded``, ``approval_holds``)
answer for the system."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone
from guardian.core import ObjectPermissionChecker

from common.db import rows
from governance.models import Project, ServiceAccount
from governance.permissions import is_platform_admin, project_roles_held
from governance.roles import Role


def project_list(*, user: AbstractBaseUser, roles: Iterable[Role] | None = None) -> QuerySet[Project]:
    """Projects where ``user`` holds any role (or one of ``roles``); platform admins see all."""
    if is_platform_admin(user):
        return Project.objects.all()
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    # One query with two subqueries over guardian's tables (its general lookup costs several).
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import IntegerField, Q
    from django.db.models.functions import Cast
    from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

    where = {
        "content_type": ContentType.objects.get_for_model(Project),
        "permission__codename__in": [role.codename for role in (Role if roles is None else roles)],
    }
    direct = get_user_obj_perms_model().objects.filter(user=user, **where)
    through_groups = get_group_obj_perms_model().objects.filter(group__user=user, **where)
    return Project.objects.filter(
        Q(pk__in=direct.values(pk_int=Cast("object_pk", IntegerField())))
        | Q(pk__in=through_groups.values(pk_int=Cast("object_pk", IntegerField())))
    )


def project_roles_of(*, user: AbstractBaseUser) -> list[tuple[Project, list[str]]]:
    """Each visible project with the roles ``user`` holds in it, in a constant number of queries."""
    projects = list(project_list(user=user))
    checker = ObjectPermissionChecker(user)
    checker.prefetch_perms(projects)
    result = []
    for project in projects:
        codenames = set(checker.get_perms(project))  # served from the prefetched cache
        result.append((project, [role.value for role in Role if role.codename in codenames]))
    return result


def service_accounts_managed(*, user: AbstractBaseUser) -> QuerySet[ServiceAccount]:
    """The service accounts whose tokens ``user`` may see and revoke: every one for a global
    admin; otherwise the accounts they own and those holding a role in a project where they are a
    platform admin. The ``system`` account is a global admin's alone."""
    if is_platform_admin(user):
        return ServiceAccount.objects.all()
    if not user.is_authenticated or not user.is_active:
        return ServiceAccount.objects.none()
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import Q
    from guardian.utils import get_user_obj_perms_model

    from governance.permissions import SYSTEM_USERNAME

    administered = [str(pk) for pk in project_list(user=user, roles=[Role.PLATFORM_ADMIN]).values_list("pk", flat=True)]
    members = get_user_obj_perms_model().objects.filter(
        content_type=ContentType.objects.get_for_model(Project), object_pk__in=administered,
        permission__codename__in=[role.codename for role in Role],
    ).values("user_id")  # fmt: skip
    return ServiceAccount.objects.filter(Q(owner=user) | Q(user__in=members)).exclude(user__username=SYSTEM_USERNAME)


def accounts_managed(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """The accounts ``user`` manages besides their own: whose API tokens they see and revoke, and
    whose second-factor lock they lift. The service accounts they manage
    (``service_accounts_managed``) and the people holding a role in a project where they are a
    platform admin, so that a colleague's leaked token is revoked without waiting for its owner.
    Global admins are managed by global admins alone; every account by one."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import Q
    from guardian.utils import get_user_obj_perms_model

    from governance.permissions import SYSTEM_USERNAME

    users = get_user_model().objects.all()
    if is_platform_admin(user):
        return users
    if not user.is_authenticated or not user.is_active:
        return users.none()
    administered = [str(pk) for pk in project_list(user=user, roles=[Role.PLATFORM_ADMIN]).values_list("pk", flat=True)]
    members = get_user_obj_perms_model().objects.filter(
        content_type=ContentType.objects.get_for_model(Project), object_pk__in=administered,
        permission__codename__in=[role.codename for role in Role],
    ).values("user_id")  # fmt: skip
    people = Q(pk__in=members, service_account__isnull=True, is_superuser=False)
    return users.filter(people | Q(service_account__in=service_accounts_managed(user=user))).exclude(
        username=SYSTEM_USERNAME
    )


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """The API tokens ``user`` may see (and revoke): their own and those of the accounts they
    manage (``accounts_managed``); every token for a global admin. Newest first."""
    from django.db.models import Q

    from governance.models import ApiToken

    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-pk")
    if is_platform_admin(user):
        return tokens
    if not user.is_authenticated or not user.is_active:
        return tokens.none()
    return tokens.filter(Q(user=user) | Q(user__in=accounts_managed(user=user)))


def api_token_get(*, user: AbstractBaseUser, prefix: str) -> Any:
    """The token with this prefix, if ``user`` may see it (``api_token_list``); else 404, the same
    answer as for a prefix no token has."""
    from common.errors import NotFound

    token = api_token_list(user=user).filter(prefix=prefix).first()
    if token is None:
        raise NotFound("not_found", f"no API token {prefix!r} of yours")
    return token


def approval_list(*, user: AbstractBaseUser, inbox: bool = False) -> QuerySet[Any]:
    """Requests in the projects the user holds a role in. ``inbox``: the pending requests the user
    may decide now (``approval_may_decide``)."""
    from governance.models import ApprovalRequest

    queryset = (
        ApprovalRequest.objects.filter(project__in=project_list(user=user))
        .select_related("project", "requester")
        .prefetch_related("decisions__approver")
    )
    if not inbox:
        return queryset
    return queryset.filter(pk__in=approval_ids_waiting_for(user=user))


@dataclass(frozen=True)
class MayDecide:
    """Whether a person may decide a request now: ``why`` says why not in words, or which slot
    they would fill; ``roles`` are the open slots they could fill, in the rule's order."""

    may: bool
    why: str
    roles: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.may


def _may_decide(
    user: Any, request: Any, roles_held: set[str], decisions: list[Any], parties: dict[int, int], authors: list[int]
) -> MayDecide:
    """The decision service's own rules, in its order, short of the two that bind an approval
    alone (the subject's digest and its evidence: a rejection needs neither)."""
    from governance.rules import PolicyViolation, open_slot_roles, refuse_own_party, role_in_words, slots_filled

    if user.pk == request.requester_id:
        return MayDecide(False, "you made this request: a requester never decides on their own request")
    slots = request.rule["approvals"]
    held = [slot["role"] for slot in slots if slot["role"] in roles_held]
    if not held:
        needed = " or ".join(role_in_words(slot["role"]) for slot in slots)
        return MayDecide(False, f"deciding needs the role of {needed} in project {request.project.slug}")
    if request.state != "pending":
        return MayDecide(False, f"the request is {request.state}")
    if request.expires_at is not None and request.expires_at <= timezone.now():
        return MayDecide(False, f"the request expired at {request.expires_at:%Y-%m-%d %H:%M}")
    try:
        refuse_own_party(user, request, parties, authors)
    except PolicyViolation as exc:
        return MayDecide(False, exc.message)
    if any(parties[decision.approver_id] == parties[user.pk] for decision in decisions):
        return MayDecide(False, "you have already decided on this request: one person fills one slot")
    open_roles = open_slot_roles(slots, slots_filled(decisions), held)
    if not open_roles:
        return MayDecide(False, f"the {' and '.join(map(role_in_words, held))} slot is already filled")
    return MayDecide(True, f"you would fill the {role_in_words(open_roles[0])} slot", tuple(open_roles))


def approval_may_decide(*, user: AbstractBaseUser, request: Any) -> MayDecide:
    """May ``user`` decide ``request`` now? By the rules ``approval_request_decide`` applies: a
    role in the project with an open slot of the rule, the request pending and unexpired,
    separation of duties (not the requester, nor the subject's maker, nor their service account
    or its owner) and no decision of theirs yet. The digest and the evidence are left to the
    service: they refuse an approval, not a rejection."""
    from governance.subjects import authors_of

    roles_held = {role.value for role in project_roles_held(user, request.project)}
    decisions = list(request.decisions.all())
    authors = authors_of(request.subject_type, [request.subject_id]).get(request.subject_id, [])
    parties = parties_of([user.pk, request.requester_id, *authors, *(d.approver_id for d in decisions)])
    return _may_decide(user, request, roles_held, decisions, parties, authors)


def approval_ids_waiting_for(*, user: AbstractBaseUser) -> list[int]:
    """The pending requests ``user`` may decide now (``approval_may_decide`` for each), in a
    constant number of queries: roles, candidate requests with their decisions, the subjects'
    makers per subject type, the parties."""
    from django.db.models import Q

    from governance.models import ApprovalRequest, ApprovalState
    from governance.subjects import authors_of

    if not user.is_authenticated:
        return []
    roles_by_project = {project.pk: set(roles) for project, roles in project_roles_of(user=user) if roles}
    pending = (
        ApprovalRequest.objects.filter(project_id__in=list(roles_by_project), state=ApprovalState.PENDING)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .exclude(requester=user)
        .select_related("project")
        .prefetch_related("decisions")
    )
    candidates = [
        request
        for request in pending
        if roles_by_project[request.project_id] & {slot["role"] for slot in request.rule["approvals"]}
    ]
    ids_by_type: dict[str, list[str]] = {}
    for request in candidates:
        ids_by_type.setdefault(request.subject_type, []).append(request.subject_id)
    authors = {kind: authors_of(kind, ids) for kind, ids in ids_by_type.items()}
    parties = parties_of(
        [user.pk]
        + [request.requester_id for request in candidates]
        + [author for found in authors.values() for ids in found.values() for author in ids]
        + [decision.approver_id for request in candidates for decision in request.decisions.all()]
    )
    return [
        request.pk
        for request in candidates
        if _may_decide(
            user, request, roles_by_project[request.project_id], list(request.decisions.all()), parties,
            authors[request.subject_type].get(request.subject_id, []),
        )
    ]  # fmt: skip


def approvals_waiting_for(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """The requests ``user`` may decide now, those expiring first at the top."""
    from django.db.models import F

    from governance.models import ApprovalRequest

    return (
        ApprovalRequest.objects.filter(pk__in=approval_ids_waiting_for(user=user))
        .select_related("project", "requester")
        .order_by(F("expires_at").asc(nulls_last=True), "created_at")
    )


# What the ledger records about one request, in the order it happens.
APPROVAL_ENTRY_ACTIONS = (
    "approval.requested", "approval.slot_filled", "approval.approved", "approval.rejected", "approval.withdrawn",
    "approval.expired", "approval.break_glass", "approval.break_glass_reviewed", "separation_of_duties.refused",
    "approval.lapsed",
)  # fmt: skip


def approval_ledger_entries(request: Any) -> list[dict[str, Any]]:
    """The ledger entries about ``request`` (submitted, each decision and refusal, withdrawal,
    expiry, break-glass and its review), oldest first: index, time, action, actor's name and
    payload (sealed values shown sealed). Read by the subject's indexed columns, then kept when
    the payload names this request (a subject may have had other requests)."""
    from audits.ledger.models import Entry
    from audits.ledger.selectors import entry_decoded

    found = Entry.objects.filter(
        subject_type=request.subject_type, subject_id=request.subject_id, action__in=APPROVAL_ENTRY_ACTIONS
    ).order_by("index")
    entries = []
    for entry in found:
        payload = entry_decoded(entry)["entry"].get("payload") or {}
        if payload.get("request") == request.pk:
            entries.append({
                "index": entry.index, "time": entry.created_at, "action": entry.action, "actor": entry.actor_name,
                "payload": payload,
            })  # fmt: skip
    return entries


def approval_get(*, user: AbstractBaseUser, pk: int) -> Any:
    """One request, if ``user`` may see it (a role in its project, or platform admin); else 404.

    The same visibility as ``approval_list``, by the row's project rather than a subquery over
    every visible project: three small queries on the hot path of every decision."""
    from common.errors import NotFound
    from governance.models import ApprovalRequest

    request = (
        ApprovalRequest.objects.select_related("project", "requester")
        .prefetch_related("decisions__approver")
        .filter(pk=pk)
        .first()
    )
    if request is None or not (is_platform_admin(user) or project_roles_held(user, request.project)):
        raise NotFound("not_found", f"no approval request {pk}")
    return request


def approval_history(request: Any) -> Any:
    """``request`` (already fetched by a service that checked the caller) with its requester and
    decisions loaded, for the response to that caller."""
    from django.db.models import prefetch_related_objects

    prefetch_related_objects([request], "project", "requester", "decisions__approver")
    return request


def break_glass_reviews(*, user: AbstractBaseUser) -> QuerySet[Any]:
    """Break-glass reviews in the user's projects, open and overdue first."""
    from governance.models import BreakGlassReview

    return (
        BreakGlassReview.objects.filter(request__project__in=project_list(user=user))
        .select_related("request__project", "admin", "closed_by")
        .order_by("closed_at", "due_at")
    )


def parties_of(user_ids: Iterable[int]) -> dict[int, int]:
    """Each user's party for separation of duties: a service account with an owner counts as its
    owner (automation never decides on its owner's requests, nor fills a second slot for them);
    anyone else as themselves. One query."""
    ids = sorted(set(user_ids))
    # On every decision: one hand-written statement (common/db/rows.py), not a compiled queryset.
    field = ServiceAccount._meta.get_field
    user, owner = field("user").column, field("owner").column
    owned = dict(
        rows.fetch(
            f"SELECT {user}, {owner} FROM {rows.table(ServiceAccount)} "  # noqa: S608 (names from model metadata)
            f"WHERE {owner} IS NOT NULL AND {user} IN ({', '.join(['%s'] * len(ids))})",
            ids,
        )
    )
    return {pk: owned.get(pk, pk) for pk in ids}


def policy_set_recorded(policy_hash: str) -> bool:
    """Is this policy set recorded? Asked on every decision: hand-written (common/db/rows.py)."""
    from governance.models import PolicySetRecord

    return bool(rows.fetch(f"SELECT 1 FROM {rows.table(PolicySetRecord)} WHERE hash = %s", [policy_hash]))  # noqa: S608 (names from model metadata)


def approval_holds(*, subject_type: str, subject_id: str, action: str, digest: str) -> bool:
    """Is there an approval, unexpired, not revoked by a break-glass review and not lapsed, for
    this action on the subject as it is now (its digest)? An approval about the subject given to
    another digest lapses for good on the way (``governance.services.approvals.approvals_holding``)."""
    from governance.services.approvals import approvals_holding

    return bool(approvals_holding(subject_type=subject_type, subject_id=subject_id, action=action, digest=digest))


def organisation_profile() -> Any:
    """The organisation profile the reports print (``OrganisationProfile``), or an empty unsaved one
    (every field blank, ``pk`` 1, ``ledger_index`` None) before a global admin has filled it in. It
    holds no personal data of data subjects: anyone the system shows a report to may read it."""
    from governance.models import OrganisationProfile

    return OrganisationProfile.objects.select_related("updated_by").filter(pk=1).first() or OrganisationProfile(pk=1)


def organisation_profile_may_read(*, user: AbstractBaseUser) -> bool:
    """Who reads the profile in the admin: global admins (who change it), the organisation-wide
    auditors, and the compliance officers and auditors of any project (the reports they request
    print it)."""
    from governance.roles import ORGANISATION_AUDITOR

    if is_platform_admin(user):
        return True
    if not user.is_authenticated or not user.is_active:
        return False
    if user.groups.filter(name=ORGANISATION_AUDITOR).exists():  # type: ignore[attr-defined]
        return True
    return project_list(user=user, roles=[Role.COMPLIANCE_OFFICER, Role.AUDITOR]).exists()
