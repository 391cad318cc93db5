"""A project's PII lists: what its scans do not report (allow entries) and what they report besides
the scanner's findings (deny entries). Applied to findings by ``registry.pii_lists``.

An allow entry is a value, kept only as its keyed hash (HMAC-SHA256 with
``DATA_SUBJECT_INDEX_KEY`` over ``pii-allow:`` and the value with its whitespace collapsed and its
case folded; the value itself is never stored or ledgered), or a regular expression that a
finding's whole value must match; either for one entity type or, with ``entity`` blank, for all.
A deny entry is a term (a whole word, any case) or a regular expression, and the entity type its
matches are reported as (a type of ``PII_ENTITIES`` or a project's own, such as
``CUSTOMER_CODE``).

Caveats: an allow pattern silences every finding it matches, so it is ledgered with its reason
and its author, and patterns that match the empty string are refused; patterns are capped at
``PATTERN_MAX_CHARS`` characters and compiled by the ``regex`` engine Presidio uses, but a
pathological pattern can still be slow on long texts: who may add one (a data steward or a
platform admin of the project) is the bound. Changing ``DATA_SUBJECT_INDEX_KEY`` orphans the value
entries (their hashes no longer match anything).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import Subject, ledger_append
from common.errors import Conflict, DomainError
from governance.models import PiiListEntry, PiiListKind, PiiListMatch, Project
from governance.permissions import require_project_role
from governance.roles import Role

# Who keeps a project's lists: the people who review its findings, and its administrators.
LIST_KEEPERS = {Role.DATA_STEWARD, Role.PLATFORM_ADMIN}
PATTERN_MAX_CHARS = 200
VALUE_MAX_CHARS = 1000
REASON_MAX_CHARS = 1000
ENTITY_NAME_MAX_CHARS = 64


def normalise_allow_value(value: str) -> str:
    """What an allow entry's hash is taken over: the value with its whitespace collapsed and its
    case folded, so that ``Billing`` and ``billing`` are one entry."""
    return " ".join(value.split()).casefold()


def allow_value_hash(value: str, secret: str | None = None) -> str:
    """The keyed hash an allow entry keeps for ``value`` (hex HMAC-SHA256); domain-separated from
    the data-subject index's keys, which use the same secret."""
    key = secret if secret is not None else settings.DATA_SUBJECT_INDEX_KEY
    message = f"pii-allow:{normalise_allow_value(value)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Rule:
    """One validated list rule, as stored (no value, only its hash). ``registry.pii_lists`` builds
    its matchers from these, whether they come from rows or, in the benchmark, from memory."""

    kind: str
    match: str
    entity: str
    pattern: str
    value_hash: str


def _invalid(field: str, problem: str) -> DomainError:
    return DomainError("invalid_input", f"the PII list was not changed: {field}: {problem}", fields={field: [problem]})


def _is_entity_name(name: str) -> bool:
    return (
        0 < len(name) <= ENTITY_NAME_MAX_CHARS
        and name.isascii()
        and name[0].isalpha()
        and name.isupper()
        and all(ch.isalnum() or ch == "_" for ch in name)
    )


def compile_pattern(pattern: str, field: str = "pattern") -> Any:
    """``pattern`` compiled by ``regex`` with Presidio's flags (case-insensitive, multi-line), or
    ``invalid_input`` naming ``field``: empty, too long, not a regular expression, or matching the
    empty string (which would allow, or report, everything)."""
    import regex

    if not pattern.strip():
        raise _invalid(field, "may not be blank")
    if len(pattern) > PATTERN_MAX_CHARS:
        raise _invalid(field, f"at most {PATTERN_MAX_CHARS} characters (got {len(pattern)})")
    if "\x00" in pattern:
        raise _invalid(field, "may not contain NUL characters")
    try:
        compiled = regex.compile(pattern, flags=regex.DOTALL | regex.MULTILINE | regex.IGNORECASE)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise _invalid(field, f"not a regular expression: {exc}") from None
    if compiled.fullmatch("") is not None:
        raise _invalid(field, "matches the empty string, so it would match everything")
    return compiled


def pii_rule_validate(*, kind: str, match: str, text: str, entity: str = "", secret: str | None = None) -> Rule:
    """The rule ``kind``/``match`` over ``text`` (a value, a regular expression or a term) for
    ``entity``, validated; a value is replaced by its keyed hash. Pure: no database. Refused with
    ``invalid_input`` naming the field at fault."""
    if kind not in PiiListKind.values:
        raise _invalid("kind", f"one of {', '.join(PiiListKind.values)} (got {kind!r})")
    allowed = {PiiListKind.ALLOW: (PiiListMatch.VALUE, PiiListMatch.PATTERN),
               PiiListKind.DENY: (PiiListMatch.TERM, PiiListMatch.PATTERN)}[PiiListKind(kind)]  # fmt: skip
    if match not in allowed:
        raise _invalid("match", f"an {kind} entry matches one of {', '.join(allowed)} (got {match!r})")
    if not isinstance(text, str) or not text.strip():
        raise _invalid(match, "may not be blank")
    entity = (entity or "").strip()
    if kind == PiiListKind.DENY and not entity:
        raise _invalid("entity", "a deny entry names the entity type its matches are reported as")
    if entity and not _is_entity_name(entity):
        raise _invalid(
            "entity",
            f"an entity type is written in capitals, digits and underscores, such as PERSON or CUSTOMER_CODE, "
            f"at most {ENTITY_NAME_MAX_CHARS} characters (got {entity[:80]!r})",
        )
    if match == PiiListMatch.VALUE:
        if len(text) > VALUE_MAX_CHARS:
            raise _invalid("value", f"at most {VALUE_MAX_CHARS} characters")
        return Rule(kind, match, entity, "", allow_value_hash(text, secret))
    if match == PiiListMatch.TERM:
        term = " ".join(text.split())
        if len(term) > PATTERN_MAX_CHARS or "\x00" in term:
            raise _invalid("term", f"at most {PATTERN_MAX_CHARS} characters, no NUL")
        return Rule(kind, match, entity, term, "")
    compile_pattern(text)
    return Rule(kind, match, entity, text, "")


def _known_entities(project: Project) -> set[str]:
    own = PiiListEntry.objects.filter(project=project, kind=PiiListKind.DENY, removed_at__isnull=True)
    own = own.values_list("entity", flat=True)
    return set(settings.PII_ENTITIES) | set(own)


def pii_list_entry_add(
    *,
    actor: AbstractBaseUser,
    project: Project,
    kind: str,
    match: str,
    text: str,
    entity: str = "",
    reason: str,
    source: dict[str, Any] | None = None,
) -> tuple[PiiListEntry, bool]:
    """Add a rule to ``project``'s PII lists (see the module's docstring); returns (entry, added).
    A rule the list already holds is returned with ``added`` False and nothing recorded.

    A data steward or a platform admin of the project. An allow entry's ``entity`` is blank (every
    type) or one the project's scans can report (``PII_ENTITIES`` or one of its deny entries'); a
    deny entry's is any type name. In one transaction: the row and a ``pii_list.entry_added``
    entry (the rule as stored: for a value, its keyed hash only; the reason; ``source``, e.g. the
    scan and finding a steward marked). Bad input is refused naming the field, and nothing changes."""
    require_project_role(actor, project, LIST_KEEPERS, "changing the project's PII lists")
    if not isinstance(reason, str) or not reason.strip():
        raise _invalid("reason", "say why: a list entry needs a reason")
    if len(reason) > REASON_MAX_CHARS or "\x00" in reason:
        raise _invalid("reason", f"at most {REASON_MAX_CHARS} characters, no NUL")
    rule = pii_rule_validate(kind=kind, match=match, text=text, entity=entity)
    with transaction.atomic():
        # Lock the project's row: two stewards adding the same rule at once get one entry.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        if rule.kind == PiiListKind.ALLOW and rule.entity and rule.entity not in _known_entities(project):
            known = ", ".join(sorted(_known_entities(project)))
            raise _invalid("entity", f"{rule.entity} is not a type this project's scans report ({known})")
        fields = {"kind": rule.kind, "match": rule.match, "entity": rule.entity,
                  "pattern": rule.pattern, "value_hash": rule.value_hash}  # fmt: skip
        found = PiiListEntry.objects.filter(project=project, removed_at__isnull=True, **fields).first()
        if found is not None:
            return found, False
        entry = ledger_append(
            actor=actor,
            action="pii_list.entry_added",
            subject=Subject("project", project.slug),
            payload={**fields, "reason": reason.strip(), **({"source": source} if source else {})},
        )
        row = PiiListEntry.objects.create(
            project=project, reason=reason.strip(), created_by=actor, ledger_index=entry.index, **fields
        )
    return row, True


def pii_list_entry_remove(*, actor: AbstractBaseUser, entry: PiiListEntry, reason: str) -> PiiListEntry:
    """Remove ``entry`` from its project's lists: a data steward or a platform admin of the
    project, with a reason. The row stays, marked removed (who, when, why, and the
    ``pii_list.entry_removed`` entry that records it with the rule and the entry that added it),
    and is no longer applied; 409 if it was removed already. Scans made before keep the lists'
    digest they ran with (``registry.pii_lists.PiiLists.describe``)."""
    project = entry.project
    require_project_role(actor, project, LIST_KEEPERS, "changing the project's PII lists")
    if not isinstance(reason, str) or not reason.strip():
        raise _invalid("reason", "say why: removing a list entry needs a reason")
    if len(reason) > REASON_MAX_CHARS or "\x00" in reason:
        raise _invalid("reason", f"at most {REASON_MAX_CHARS} characters, no NUL")
    with transaction.atomic():
        row = PiiListEntry.objects.select_for_update().get(pk=entry.pk)
        if row.removed_at is not None:
            when = f"{row.removed_at:%Y-%m-%d %H:%M} UTC"
            raise Conflict("already_removed", f"PII list entry {row.pk} was removed already, at {when}")
        payload = {"entry": row.pk, "kind": row.kind, "match": row.match, "entity": row.entity,
                   "pattern": row.pattern, "value_hash": row.value_hash, "added_at_index": row.ledger_index,
                   "reason": reason.strip()}  # fmt: skip
        removed = ledger_append(
            actor=actor, action="pii_list.entry_removed", subject=Subject("project", project.slug), payload=payload
        )
        row.removed_at, row.removed_by, row.removal_reason = timezone.now(), actor, reason.strip()
        row.removal_ledger_index = removed.index
        row.save(update_fields=["removed_at", "removed_by", "removal_reason", "removal_ledger_index"])
    return row
