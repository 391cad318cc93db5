"""The organisation's facts every report opens with (the controller, its representative, the DPO,
the supervisory authority, the security measures), read from the governed organisation profile,
each claimed against the ledger entry that last set it."""

from __future__ import annotations

from typing import Any

from audits.reports.builders.shared import entries, payload
from audits.reports.claims import Claims
from audits.reports.models import ReportKind
from audits.reports.pdf import Heading, KeyValues, Paragraph

# Which reports print which part of the profile.
_CONTROLLER_KINDS = {
    ReportKind.RECORDS_OF_PROCESSING,
    ReportKind.DPIA,
    ReportKind.ANNEX_IV,
    ReportKind.AI_SYSTEM_ANNEX_IV,
    ReportKind.GOVERNANCE_AUDIT,
}


def organisation(size: int, claims: Claims) -> tuple[Any, list[str]]:
    """The profile, what reports need of it and it lacks, and a claim per field a report prints,
    citing the last ``organisation.profile_updated`` entry (inside the checkpoint) that set it."""
    from governance.selectors import organisation_profile

    profile = organisation_profile()
    last_set: dict[str, int] = {}
    for entry in entries(size, action="organisation.profile_updated").only("index", "body"):
        for field in payload(entry).get("changed", {}):
            last_set[field] = entry.index
    for field in profile.EDITABLE:
        value = getattr(profile, field)
        if value and field in last_set:
            claims.add(f"organisation profile: {profile._meta.get_field(field).verbose_name}", last_set[field],
                       f"payload.changed.{field}.new", value)  # fmt: skip
    return profile, profile.missing_for_reports()


def organisation_sections(profile: Any, kind: str) -> list[Any]:
    """The opening sections: who the controller is (Art. 30(1)(a)), the security measures
    (Art. 30(1)(g), Art. 32); for the CCPA log, how consumers make requests (§1798.130(a)(1))."""
    pending = "MISSING (see the draft notice)"
    if kind == ReportKind.CCPA_REQUEST_LOG:
        return [
            Heading("The business"),
            KeyValues([
                ("business", profile.controller_name or pending),
                ("address", profile.controller_address or "not given"),
                ("consumer requests by e-mail", profile.ccpa_request_email or profile.controller_email or pending),
                ("consumer requests by toll-free number", profile.ccpa_request_phone or "not offered"),
            ]),
        ]  # fmt: skip
    if kind not in _CONTROLLER_KINDS:
        return []
    updated = (
        f"last changed {profile.updated_at:%Y-%m-%d %H:%M} UTC by {profile.updated_by.username} "
        f"(ledger #{profile.ledger_index})"
        if profile.updated_at and profile.updated_by
        else "never filled in"
    )
    providers = (ReportKind.ANNEX_IV, ReportKind.AI_SYSTEM_ANNEX_IV)
    who = "Provider (EU AI Act Art. 3(3))" if kind in providers else "Controller (GDPR Art. 30(1)(a))"
    return [
        Heading(who),
        KeyValues([
            ("controller", profile.controller_name or pending),
            ("address", profile.controller_address or "not given"),
            ("contact", profile.controller_contact() or pending),
            ("representative in the Union (Art. 27)", profile.representative_shown() or pending),
            ("data protection officer (Art. 37)", profile.dpo_shown() or pending),
            ("lead supervisory authority", profile.supervisory_authority_shown() or pending),
            ("organisation profile", updated),
        ]),
        Heading("Security measures (GDPR Art. 30(1)(g), Art. 32)"),
        Paragraph(profile.security_measures or pending),
    ]  # fmt: skip
