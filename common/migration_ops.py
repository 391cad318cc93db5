"""Operations migrations share."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def grant_view_permissions(app_label: str, models: list[str], groups: list[str]) -> migrations.RunPython:
    """A migration step giving role groups the ``view_<model>`` permissions of an app's models (for
    the admin's read-only pages). Django makes permissions after all migrations; this makes the
    app's own first."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        from django.contrib.auth.management import create_permissions

        config = apps.get_app_config(app_label)
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
        codenames = [f"view_{model}" for model in models]
        permissions = list(Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))
        for name in groups:
            Group.objects.get(name=name).permissions.add(*permissions)

    return migrations.RunPython(forwards, migrations.RunPython.noop)
