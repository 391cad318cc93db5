"""The decision's hot path reads and writes rows with hand-written SQL (common/db/rows.py): what
each read builds must be exactly what its queryset twin builds, and each write must store what
``save()`` stores, on both databases, for every field type the models use (JSON, aware datetimes,
booleans, nulls); a lookup must refuse what the ORM would refuse."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone
from guardian.shortcuts import assign_perm

from common.db import rows
from governance.models import ApiToken, ApprovalDecision, ApprovalRequest
from governance.permissions import project_roles_held
from governance.roles import Role
from governance.services import api_token_authenticate, api_token_create, approval_request_decide, project_role_grant
from governance.services.decisions import _approval_decisions, _approval_request_locked
from governance.services.policy_sets import policy_set_in_force
from registry.governed import _dataset_version
from registry.models import DatasetVersion
from tests.test_approvals import _submit, _version


def _same(loaded: Model, expected: Model) -> None:
    assert type(loaded) is type(expected)
    assert loaded._state.adding is False and loaded._state.db == expected._state.db
    for field in expected._meta.concrete_fields:
        got, want = getattr(loaded, field.attname), getattr(expected, field.attname)
        assert (got, type(got)) == (want, type(want)), field.name


@pytest.mark.django_db
def test_request_decisions_token_and_version_load_as_the_orm_loads_them(people: dict[str, Any]) -> None:
    version = _version(people)
    request = _submit(people, version)
    second = get_user_model().objects.create_user(username="second-steward")
    project_role_grant(
        actor=people["system"], project=people["project"], user=second, role=Role.DATA_STEWARD, reason="test setup"
    )
    # Two slots: one decision leaves the request pending, with a decision row to read back.
    rule = {**request.rule, "approvals": [{"role": "data_steward", "count": 2}], "nested": {"ü": [1, 2.5, None, True]}}
    ApprovalRequest.objects.filter(pk=request.pk).update(
        rule=rule,
        expires_at=timezone.now() + timedelta(days=3),
    )
    approval_request_decide(actor=people["data_steward"], request_id=request.pk, decision="approve", reason="ok")

    loaded = _approval_request_locked(request.pk)
    expected = ApprovalRequest.objects.select_related("project", "requester").get(pk=request.pk)
    _same(loaded, expected)
    _same(loaded.project, expected.project)
    _same(loaded.requester, expected.requester)
    assert loaded.rule["nested"] == {"ü": [1, 2.5, None, True]} and loaded.expires_at.tzinfo is not None
    assert loaded.closed_at is None
    assert _approval_request_locked(request.pk + 1000) is None

    decisions = _approval_decisions(loaded)
    expected_decisions = list(ApprovalDecision.objects.filter(request=request).order_by("created_at", "id"))
    assert len(decisions) == len(expected_decisions) == 1
    _same(decisions[0], expected_decisions[0])
    _same(decisions[0].approver, expected_decisions[0].approver)
    assert decisions[0].request is loaded

    token_row, token = api_token_create(
        actor=people["system"], user=people["auditor"], name="t", expires_at=timezone.now() + timedelta(days=1)
    )
    api_token_authenticate(token)  # the first use stamps last_used_at; the second reads it back
    authenticated = api_token_authenticate(token)
    assert authenticated.last_used_at is not None
    _same(authenticated, ApiToken.objects.get(pk=token_row.pk))
    _same(authenticated.user, people["auditor"])
    assert api_token_authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None

    found = _dataset_version(str(version.pk))
    expected_version = DatasetVersion.objects.select_related("dataset__project").get(pk=version.pk)
    _same(found, expected_version)
    _same(found.dataset, expected_version.dataset)
    _same(found.dataset.project, expected_version.dataset.project)


@pytest.mark.django_db
def test_insert_and_update_write_what_save_writes(people: dict[str, Any]) -> None:
    request = _submit(people, _version(people))
    made = ApprovalDecision(
        request=request, approver=people["data_steward"], role="data_steward", decision="approve",
        reason="r\u00e9ason", subject_digest=request.subject_digest, policy_hash="sha256:x", ledger_index=2**40,
    )  # fmt: skip
    rows.insert(made)
    assert made.pk is not None and made.created_at is not None and made._state.adding is False
    _same(made, ApprovalDecision.objects.get(pk=made.pk))
    with pytest.raises(IntegrityError), transaction.atomic():  # the one-decision-per-person constraint holds
        rows.insert(ApprovalDecision(**{f.attname: getattr(made, f.attname) for f in made._meta.concrete_fields[1:]}))

    request.state, request.closed_at, request.comment = "approved", timezone.now(), "not written"
    rows.update(request, ["state", "closed_at"])
    stored = ApprovalRequest.objects.get(pk=request.pk)
    assert (stored.state, stored.closed_at, stored.comment) == ("approved", request.closed_at, "for the tone fine-tune")
    request.pk = request.pk + 1000
    with pytest.raises(ApprovalRequest.DoesNotExist):
        rows.update(request, ["state"])


@pytest.mark.django_db
@pytest.mark.parametrize("pk", ["", "-1", "1.0", " 1", "\u0661", "\u00b2", str(2**63), "1e3"])
def test_a_version_id_the_orm_would_refuse_finds_nothing(people: dict[str, Any], pk: str) -> None:
    _version(people)
    assert _dataset_version(pk) is None


@pytest.mark.django_db
def test_roles_held_through_user_and_group_permissions(people: dict[str, Any]) -> None:
    project = people["project"]
    user = get_user_model().objects.create_user(username="grouped")
    assert project_roles_held(user, project) == set()
    group = Group.objects.create(name="reviewers")
    user.groups.add(group)
    assign_perm(Role.AUDITOR.codename, group, project)  # a group grant (as an operator might set up)
    assign_perm(Role.DATA_STEWARD.codename, user, project)
    assert project_roles_held(user, project) == {Role.AUDITOR, Role.DATA_STEWARD}
    other = get_user_model().objects.create_user(username="outsider")
    assert project_roles_held(other, project) == set()
    assert project_roles_held(people["auditor"], project) == {Role.AUDITOR}
    for someone in (user, other, people["auditor"], people["data_steward"]):
        assert project_roles_held(someone, project) == _roles_by_queryset(someone, project)


def _roles_by_queryset(user: Any, project: Any) -> set[Role]:
    from django.contrib.contenttypes.models import ContentType
    from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

    where = {"content_type": ContentType.objects.get_for_model(project), "object_pk": str(project.pk)}
    direct = get_user_obj_perms_model().objects.filter(user=user, **where)
    grouped = get_group_obj_perms_model().objects.filter(group__user=user, **where)
    codenames = set(direct.values_list("permission__codename", flat=True)) | set(
        grouped.values_list("permission__codename", flat=True)
    )
    return {role for role in Role if role.codename in codenames}


@pytest.mark.django_db
def test_the_policy_set_record_is_read_as_the_orm_reads_it(people: dict[str, Any]) -> None:
    from governance.models import PolicySetRecord
    from governance.selectors import policy_set_recorded

    recorded = policy_set_in_force()
    assert policy_set_recorded(recorded.hash) is PolicySetRecord.objects.filter(hash=recorded.hash).exists() is True
    assert policy_set_recorded("sha256:none") is PolicySetRecord.objects.filter(hash="sha256:none").exists() is False


@pytest.mark.django_db
def test_parties_read_by_hand_match_the_orm(people: dict[str, Any]) -> None:
    from governance.models import ServiceAccount
    from governance.selectors import parties_of
    from governance.services import service_account_create

    owned = service_account_create(actor=people["system"], username="owned-bot", owner=people["ml_engineer"])
    ownerless = service_account_create(actor=people["system"], username="lone-bot")
    ids = [people["ml_engineer"].pk, owned.user_id, ownerless.user_id, people["auditor"].pk]
    orm = dict(ServiceAccount.objects.filter(user_id__in=ids, owner__isnull=False).values_list("user_id", "owner_id"))
    assert parties_of(ids) == {pk: orm.get(pk, pk) for pk in ids}
    assert parties_of(ids)[owned.user_id] == people["ml_engineer"].pk
    assert parties_of(ids)[ownerless.user_id] == ownerless.user_id


@pytest.mark.django_db
def test_a_statement_runs_on_djangos_cursor(people: dict[str, Any]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    sql = f"SELECT username, '100%%' FROM {rows.table(get_user_model())} WHERE id = %s"  # noqa: S608
    with CaptureQueriesContext(connection) as captured:
        assert rows.fetch(sql, [people["auditor"].pk]) == [("auditor", "100%")]  # %s and %% as Django reads them
    assert len(captured) == 1 and "100%" in captured[0]["sql"]
