"""Models and their versions: weights registered from a folder into the artifact store, and
materialised back out of it for the workers that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from audits.ledger.services import Subject, ledger_append
from common import artifacts
from common.errors import Conflict, DomainError
from common.tasks import dispatch_on_commit
from governance.models import Project
from governance.permissions import require_project_role
from governance.roles import Role
from registry.models import DatasetVersion
from registry.rules import dataset_version_digest, use_status, weights_digest
from registry.services.datasets import _file_chunks, _unreadable


def model_version_materialise(version: Any, folder: Path) -> Path:
    """Copy the version's files out of the artifact store into ``folder``, checking each against
    its digest and the whole against the weights digest; ``weights_mismatch`` if anything differs."""
    import shutil

    if weights_digest(version.files) != version.weights_digest:
        raise Conflict("weights_mismatch", f"model version {version.pk}: its file list no longer gives its digest")
    folder.mkdir(parents=True, exist_ok=True)
    for relative, digest in sorted(version.files.items()):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with artifacts.open_reader(digest) as src, target.open("wb") as dst:
                while chunk := src.read(artifacts.CHUNK):
                    dst.write(chunk)
        except artifacts.ArtifactCorrupt:
            shutil.rmtree(folder, ignore_errors=True)
            raise Conflict(
                "weights_mismatch", f"model version {version.pk}: {relative} no longer matches its digest {digest}"
            ) from None
        except artifacts.ArtifactMissing:
            raise Conflict("weights_mismatch", f"model version {version.pk}: {relative} is missing") from None
    return folder


def model_create(*, actor: Any, project: Project, slug: str, name: str, description: str = "") -> Any:
    from registry.models import Model

    require_project_role(actor, project, {Role.ML_ENGINEER}, "registering a model")
    with transaction.atomic():
        if Model.objects.filter(project=project, slug=slug).exists():
            raise Conflict("model_exists", f"project {project.slug} already has a model {slug!r}")
        model = Model(project=project, slug=slug, name=name, description=description, owner=actor)
        model.full_clean()
        model.save()
        ledger_append(
            actor=actor, action="model.created", subject=Subject("model", str(model.pk)), payload={"slug": slug}
        )
    return model


def model_version_register_folder(
    *,
    actor: Any,
    model: Any,
    folder: str,
    base: Any = None,
    dataset_versions: list[DatasetVersion] | None = None,
    allowed_roots: list[Path] | None = None,
    lineage: dict[str, Any] | None = None,
) -> tuple[Any, bool]:
    """Register the weights in ``folder`` (under ``REGISTRY_ALLOWED_ROOTS``, or ``allowed_roots``
    for the system's own outputs): every file becomes a blob; identical weights give the
    existing version back. ``lineage`` records how the service made them (run, code version).
    ``base`` and ``dataset_versions`` must belong to the model's project (400 ``invalid_input``)."""
    from registry.models import Model, ModelVersion

    require_project_role(actor, model.project, {Role.ML_ENGINEER}, "registering model weights")
    # Lineage stays inside the project: naming another project's data or weights would leak
    # that they exist and tie this model to subjects the actor may not govern.
    if base is not None and base.model.project_id != model.project_id:
        message = f"model version {base.pk} belongs to another project"
        raise DomainError("invalid_input", f"base: {message}", fields={"base": [message]})
    for dv in dataset_versions or []:
        if dv.dataset.project_id != model.project_id:
            message = f"dataset version {dv.pk} belongs to another project"
            raise DomainError("invalid_input", f"dataset_versions: {message}", fields={"dataset_versions": [message]})
    try:
        root = Path(folder).resolve()
    except (OSError, ValueError) as exc:
        raise _unreadable("folder", folder, exc) from None
    roots = allowed_roots if allowed_roots is not None else settings.REGISTRY_ALLOWED_ROOTS
    if not any(root.is_relative_to(r) for r in roots):
        raise DomainError("path_not_allowed", f"{folder} is outside the allowed roots (REGISTRY_ALLOWED_ROOTS)")
    try:
        if not root.is_dir():
            raise DomainError("path_not_found", f"{folder} is not a folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            if not path.resolve().is_relative_to(root):
                raise DomainError("path_not_allowed", f"{path} links outside {folder}")
    except OSError as exc:  # a name too long, a folder it may not enter
        raise _unreadable("folder", folder, exc) from None
    if not paths:
        raise DomainError("empty_folder", f"{folder} holds no file")
    files: dict[str, str] = {}
    size = 0
    for path in paths:
        digest, n = artifacts.put_chunks(_file_chunks(path, "folder"))
        files[path.relative_to(root).as_posix()] = digest
        size += n
    digest = weights_digest(files)
    with transaction.atomic():
        # One registration of a model at a time (its next number), and the dataset versions held
        # still while they are checked: an erasure committing meanwhile waits or is seen
        # (PostgreSQL row locks; SQLite's transactions are serial already).
        Model.objects.select_for_update().filter(pk=model.pk).values_list("pk", flat=True).first()
        locked = DatasetVersion.objects.select_for_update().filter(pk__in=[dv.pk for dv in dataset_versions or []])
        for dv in locked.order_by("pk"):
            allowed, reason = use_status(dv)
            if not allowed:
                raise DomainError("dataset_not_usable", f"{dv} may not be used: {reason}")
        existing = ModelVersion.objects.filter(model=model, weights_digest=digest).first()
        if existing is not None:
            return existing, False
        number = (model.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
        version = ModelVersion.objects.create(
            model=model, number=number, weights_digest=digest, files=files, size_bytes=size, source=str(root),
            base=base, created_by=actor, lineage=lineage or {},
        )  # fmt: skip
        version.dataset_versions.set(dataset_versions or [])
        ledger_append(
            actor=actor,
            action="model_version.registered",
            subject=Subject("model_version", str(version.pk), digest),
            payload={
                "model": str(model), "number": number, "files": len(files), "size_bytes": size,
                "base": base.weights_digest if base else None,
                "dataset_versions": [dataset_version_digest(dv) for dv in dataset_versions or []],
                "lineage": lineage or {},
            },
        )  # fmt: skip
        dispatch_on_commit("registry.mlflow_mirror", args=(version.pk,), queue="cpu")
    return version, True
