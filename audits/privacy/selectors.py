"""Reads of the data-subject request workflow. Requests, holds and reviews are seen by the
compliance officers and auditors of their project (and platform admins). An object of a project
where the caller holds no role answers 404; a member without one of those roles gets 403.

The reads at the end (where a person's data lies: the subject index, lineage, the records
themselves) take no user: the services call them after checking the actor's role."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from audits.privacy.models import DataSubjectRequest, LegalHold, ModelReview
from common.errors import NotFound, PermissionDenied
from governance.models import Project
from governance.permissions import is_platform_admin, project_roles_held, require_project_role
from governance.roles import Role
from governance.selectors import project_list
from incidents.models import FREE_TEXT_FIELDS, Incident
from registry.models import DatasetVersion, DataSubjectIndexEntry, ModelVersion, PiiVerdict
from registry.records import read_records

READER_ROLES = frozenset({Role.COMPLIANCE_OFFICER, Role.AUDITOR})


def privacy_projects(*, user: Any) -> QuerySet[Project]:
    """Projects where ``user`` is a compliance officer or an auditor; platform admins see all."""
    return project_list(user=user, roles=READER_ROLES)


def officer_projects(*, user: Any) -> QuerySet[Project]:
    """Projects where ``user`` may act on data-subject requests (compliance officer; platform
    admins: all)."""
    return project_list(user=user, roles={Role.COMPLIANCE_OFFICER})


def may_act(*, user: Any, project: Project) -> bool:
    """Whether ``user`` may act on the requests of ``project``: the very check the services make
    (``require_project_role`` with the compliance officer's role), so a page offers an action
    exactly when the service would accept its actor."""
    try:
        require_project_role(user, project, {Role.COMPLIANCE_OFFICER}, "acting on data-subject requests")
    except PermissionDenied:
        return False
    return True


def require_reader(*, user: Any, project: Project) -> None:
    if not (is_platform_admin(user) or project_roles_held(user, project) & READER_ROLES):
        raise PermissionDenied(
            "permission_denied", f"data-subject requests of {project.slug} are for compliance officers and auditors"
        )


def request_list(*, user: Any) -> QuerySet[DataSubjectRequest]:
    return DataSubjectRequest.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "received_by", "verified_by", "closed_by"
    )


def _visible(queryset: QuerySet[Any], user: Any, pk: int, what: str) -> Any:
    """404 outside the caller's projects, 403 for a member without a reader role."""
    obj = queryset.filter(pk=pk, project__in=project_list(user=user)).select_related("project").first()
    if obj is None:
        raise NotFound("not_found", f"no {what} {pk}")
    require_reader(user=user, project=obj.project)
    return obj


def request_get(*, user: Any, pk: int) -> DataSubjectRequest:
    return _visible(DataSubjectRequest.objects.all(), user, pk, "data-subject request")


def legal_hold_list(*, user: Any) -> QuerySet[LegalHold]:
    return LegalHold.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "placed_by", "released_by"
    )


def legal_hold_get(*, user: Any, pk: int) -> LegalHold:
    return _visible(LegalHold.objects.all(), user, pk, "legal hold")


def model_review_list(*, user: Any) -> QuerySet[ModelReview]:
    return ModelReview.objects.filter(project__in=privacy_projects(user=user)).select_related(
        "project", "model_version__model", "closed_by"
    )


def model_review_get(*, user: Any, pk: int) -> ModelReview:
    return _visible(ModelReview.objects.all(), user, pk, "model review")


def request_log(*, user: Any, project: Project, since: datetime | None = None) -> list[dict[str, Any]]:
    """The CCPA §7101(a) record of consumer requests: the date of the request, its nature and
    manner, the date and nature of the response, and the basis for a denial. Every request is
    kept (requests are never deleted), so the log covers at least the 24 months §7101(b) asks."""
    require_reader(user=user, project=project)
    queryset = DataSubjectRequest.objects.filter(project=project).order_by("received_at", "pk")
    if since is not None:
        queryset = queryset.filter(received_at__gte=since)
    return [
        {
            "id": r.pk,
            "regime": r.regime,
            "request_date": r.received_at,
            "nature": r.kind,
            "nature_display": r.get_kind_display(),
            "manner": r.channel,
            "state": r.state,
            "response_date": r.responded_at,
            "response_nature": r.response_nature,
            "denial_basis": r.denial_basis,
            "respond_by": r.respond_by,
            "extended": r.extended,
        }
        for r in queryset
    ]


# --- where a person's data lies (no permission check: for the services) -----------------------


def index_versions(project: Project, hashes: list[dict[str, str]]) -> dict[int, set[str]]:
    """Live dataset versions of ``project`` whose scans indexed one of ``hashes``: id -> kinds."""
    where = Q()
    for h in hashes:
        where |= Q(kind=h["kind"], key_hash=h["key_hash"])
    found: dict[int, set[str]] = {}
    rows = DataSubjectIndexEntry.objects.filter(
        where, version__dataset__project=project, version__erased_at__isnull=True
    ).values_list("version_id", "kind")
    for version_id, kind in rows:
        found.setdefault(version_id, set()).add(kind)
    return found


def models_trained_on(project: Project, version_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Model versions of ``project`` trained on the dataset versions (by their lineage: the
    registered dataset versions, the fine-tune run that made them), and those fine-tuned from
    them in turn: model version id -> {trained_on: [dataset version ids], via}."""
    from training.models import FineTuneRun

    ids = set(version_ids)
    found: dict[int, dict[str, Any]] = {}

    def add(model_version_id: int, dataset_version_id: int | None, via: str) -> None:
        entry = found.setdefault(model_version_id, {"trained_on": set(), "via": via})
        if dataset_version_id is not None:
            entry["trained_on"].add(dataset_version_id)

    through = ModelVersion.dataset_versions.through.objects
    for mv, dv in through.filter(datasetversion_id__in=ids, modelversion__model__project=project).values_list(
        "modelversion_id", "datasetversion_id"
    ):
        add(mv, dv, "training")
    runs = FineTuneRun.dataset_versions.through.objects.filter(datasetversion_id__in=ids, finetunerun__project=project)
    run_versions: dict[int, set[int]] = {}
    for run_id, dv in runs.values_list("finetunerun_id", "datasetversion_id"):
        run_versions.setdefault(run_id, set()).add(dv)
    for run_id, output_id in FineTuneRun.objects.filter(pk__in=run_versions, output__isnull=False).values_list(
        "pk", "output_id"
    ):
        for dv in run_versions[run_id]:
            add(output_id, dv, "training")
    for mv, run_id in ModelVersion.objects.filter(
        model__project=project, lineage__fine_tune_run__in=list(run_versions)
    ).values_list("pk", "lineage__fine_tune_run"):
        for dv in run_versions.get(int(run_id), ()):
            add(mv, dv, "training")
    frontier = set(found)
    while frontier:  # versions fine-tuned from an affected version carry its data too
        children = ModelVersion.objects.filter(base_id__in=frontier, model__project=project).values_list(
            "pk", "base_id"
        )
        frontier = set()
        for child, base in children:
            if child not in found:
                found[child] = {"trained_on": set(found[base]["trained_on"]), "via": f"base {base}"}
                frontier.add(child)
    return {k: {"trained_on": sorted(v["trained_on"]), "via": v["via"]} for k, v in sorted(found.items())}


def deployments_serving(model_version_ids: Iterable[int]) -> QuerySet[Any]:
    """The deployments of these model versions, whatever their state (a retired one served the
    data too)."""
    from serving.models import Deployment

    return Deployment.objects.filter(model_version_id__in=list(model_version_ids)).order_by("pk")


def subject_findings(project: Project, hashes: list[dict[str, str]]) -> dict[str, Any]:
    """What a search finds of the person in ``project``: the dataset versions indexed with one of
    ``hashes``, the model versions trained on them, their deployments, and the versions whose PII
    scan has not succeeded (the index cannot speak for those)."""
    index = index_versions(project, hashes)
    versions = DatasetVersion.objects.filter(pk__in=index).select_related("dataset").order_by("dataset__slug", "number")
    models = models_trained_on(project, index)
    model_rows = ModelVersion.objects.filter(pk__in=models).select_related("model").order_by("model__slug", "number")
    deployments = deployments_serving(models)
    unscanned = DatasetVersion.objects.filter(
        dataset__project=project, erased_at__isnull=True, pii_verdict__in=[PiiVerdict.PENDING, PiiVerdict.FAILED]
    ).values_list("pk", flat=True)
    found = bool(index)
    return {
        "found": found,
        "message": (
            f"{len(index)} dataset version(s) of project {project.slug} hold this person"
            if found
            else f"no dataset version of project {project.slug} holds these identifiers (per the subject index)"
        ),
        "dataset_versions": [
            {"id": v.pk, "dataset": str(v.dataset), "number": v.number, "kinds": sorted(index[v.pk])} for v in versions
        ],
        "model_versions": [{"id": m.pk, "model": str(m.model), "number": m.number, **models[m.pk]} for m in model_rows],
        "deployments": [
            {
                "id": d.pk,
                "name": d.name,
                "environment": d.environment,
                "state": d.state,
                "model_version": d.model_version_id,
            }
            for d in deployments
        ],
        "unscanned_versions": sorted(unscanned),
    }


def person_records(version: DatasetVersion, find: Callable[[str], list[tuple[int, int]]]) -> list[Any]:
    """The records of ``version`` in which ``find`` (``identifiers.finder``) finds the person; a
    409 (which rolls the whole answer back) when its bytes are gone from the store or no longer
    match its content hash."""
    from registry.services import dataset_version_bytes

    data = dataset_version_bytes(version)
    return [r for r in read_records(data, version.format) if any(find(text) for text in r.fields.values())]


def incidents_naming(
    project: Project, find: Callable[[str], list[tuple[int, int]]]
) -> list[tuple[Incident, list[str]]]:
    """The incidents of ``project`` whose free text holds the person (``identifiers.finder``),
    each with the fields that do, by number."""
    found = []
    for incident in Incident.objects.filter(project=project).order_by("number"):
        fields = [name for name in FREE_TEXT_FIELDS if find(getattr(incident, name))]
        if fields:
            found.append((incident, fields))
    return found


def transcripts_naming(project: Project, find: Callable[[str], list[tuple[int, int]]]) -> list[tuple[Any, list[Any]]]:
    """The deployments of ``project`` whose transcripts hold the person (``identifiers.finder``),
    each with the turns that do (``serving.services.transcripts``), by deployment id."""
    from serving.models import Deployment
    from serving.services.transcripts import transcript_turns_naming

    found = []
    for deployment in Deployment.objects.filter(project=project).order_by("pk"):
        turns = transcript_turns_naming(deployment, find)
        if turns:
            found.append((deployment, turns))
    return found
