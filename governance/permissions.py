"""Permission questions, answered the same way for the admin, the API and the services."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from governance.models import Project
from governance.roles import Role

SYSTEM_USERNAME = "system"


def is_platform_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Global administration (creating projects, service accounts, anyone's tokens): superusers
    and the ``system`` account only. The ``platform_admin`` role is granted per project and
    administers that project alone (see ``can_administer``)."""
    if not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_superuser or user.get_username() == SYSTEM_USERNAME)  # type: ignore[union-attr]


def require_platform_admin(actor: AbstractBaseUser, what: str) -> None:
    """Raise ``PermissionDenied`` unless ``actor`` is a global admin (see ``is_platform_admin``)."""
    from common.errors import PermissionDenied

    if not is_platform_admin(actor):
        raise PermissionDenied("permission_denied", f"only a platform admin may {what}")


def can_administer(user: AbstractBaseUser | AnonymousUser, project: Project) -> bool:
    """Granting and revoking roles in ``project``: global admins and the project's platform admins."""
    return is_platform_admin(user) or has_project_role(user, project, Role.PLATFORM_ADMIN)


def project_roles_held(user: AbstractBaseUser | AnonymousUser, project: Project) -> set[Role]:
    """The roles ``user`` holds in ``project`` (directly or through a group), in one indexed
    query; superusers hold every role, as with Django's ``has_perm``."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:  # type: ignore[union-attr]
        return set(Role)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

    from common.db import rows

    # Asked on every governed call: one hand-written statement (common/db/rows.py), not two
    # querysets. Both guardian tables are indexed on (content type, object).
    perm, user_perm, group_perm = rows.table(Permission), get_user_obj_perms_model(), get_group_obj_perms_model()
    memberships = rows.table(get_user_model().groups.through)
    where = "o.content_type_id = %s AND o.object_pk = %s"
    params = [ContentType.objects.get_for_model(Project).pk, str(project.pk)]
    codenames = {
        codename
        for (codename,) in rows.fetch(
            f"SELECT p.codename FROM {rows.table(user_perm)} o INNER JOIN {perm} p ON p.id = o.permission_id "  # noqa: S608 (names from model metadata)
            f"WHERE o.user_id = %s AND {where} "
            f"UNION SELECT p.codename FROM {rows.table(group_perm)} o INNER JOIN {perm} p ON p.id = o.permission_id "
            f"INNER JOIN {memberships} m ON m.group_id = o.group_id WHERE m.user_id = %s AND {where}",
            [user.pk, *params, user.pk, *params],
        )
    }
    return {role for role in Role if role.codename in codenames}


def has_project_role(user: AbstractBaseUser | AnonymousUser, project: Project, role: Role) -> bool:
    return role in project_roles_held(user, project)


def require_project_role(user: AbstractBaseUser | AnonymousUser, project: Project, roles: set[Role], what: str) -> None:
    """Raise ``PermissionDenied`` unless ``user`` holds one of ``roles`` in ``project`` (or is a
    platform admin)."""
    from common.errors import PermissionDenied

    if is_platform_admin(user) or project_roles_held(user, project) & roles:
        return
    names = " or ".join(sorted(role.value for role in roles))
    raise PermissionDenied("permission_denied", f"{what} needs the {names} role in project {project.slug}")


def ledger_readable_project_ids(user: AbstractBaseUser | AnonymousUser) -> set[int]:
    """The projects whose ledger entries ``user`` reads: those where they hold a ledger reading
    role (``LEDGER_READER_ROLES``). Reading every entry (the organisation-wide auditors, global
    admins) is the ledger's own permission, ``ledger.read_all_entries`` (audits/ledger/scopes.py)."""
    from governance.roles import LEDGER_READER_ROLES
    from governance.selectors import project_list

    return set(project_list(user=user, roles=LEDGER_READER_ROLES).values_list("pk", flat=True))
