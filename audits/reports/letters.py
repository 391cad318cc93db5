"""The data subject's letter: the answer to a GDPR Art. 15 access request or a CCPA request to
know, as a signed PDF in plain language, addressed to the person, with the access package (JSON)
embedded as its machine-readable annex, ``access-package.json``.

It lives on this floor because the PDF layer does; the privacy app below supplies the content and
records the facts through its own services, each in its own transaction:

1. ``dsr_access_package`` checks the caller's role and the request's state, builds the package
   and ledgers ``data_subject_request.access_package_issued`` with its SHA-256;
2. a ledger checkpoint is signed, so the letter cites a checkpoint that holds that entry (the
   letter's ``report.json`` claims the package digest from it: ``report verify`` checks it);
3. the letter is rendered (``build_pdf``) and signed (``sign_report_pdf``);
4. ``dsr_letter_record`` ledgers ``data_subject_request.letter_issued`` with the PDF's SHA-256
   beside the package's.

Caveats: a failure in 2 or 3 leaves the package issued (step 1 is on record) and no letter; issuing
again makes a new package and a new letter. The content goes to the caller alone, to send on:
only digests are kept. Words for the reader come from the package (the datasets' declared
purposes, bases, recipients, retention, sources) and the organisation
profile (controller, contact, DPO, supervisory authority); nothing in it is legal advice.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Any

from django.utils import timezone

from audits.privacy.models import DataSubjectRequest, Kind, Regime
from audits.privacy.services import dsr_access_package, dsr_letter_record
from audits.reports.pdf import (
    Attachment,
    Claim,
    Digest,
    Heading,
    KeyValues,
    Paragraph,
    Report,
    Section,
    Table,
    build_pdf,
)
from common.errors import Conflict

PACKAGE_FILENAME = "access-package.json"
LETTER_KINDS = {Kind.ACCESS: "access_letter", Kind.KNOW: "know_letter"}
# The records are printed in the letter too when there are at most this many (all are in the annex).
RECORDS_IN_LETTER = 25
# A field of a record printed in the letter is cut after this many characters (the annex has it whole).
FIELD_CHARS = 300

_IDENTIFIER_WORDS = {
    "EMAIL_ADDRESS": "e-mail address",
    "PHONE_NUMBER": "phone number",
    "PERSON": "name",
    "LOCATION": "address or place",
    "IP_ADDRESS": "IP address",
    "CREDIT_CARD": "payment card number",
    "IBAN_CODE": "bank account number (IBAN)",
    "US_SSN": "social security number",
}
# The lawful bases of GDPR Art. 6(1) as a person reads them.
_BASIS_WORDS = {
    "consent": "your consent (GDPR Art. 6(1)(a))",
    "contract": "a contract with you (GDPR Art. 6(1)(b))",
    "legal_obligation": "a legal obligation we have (GDPR Art. 6(1)(c))",
    "vital_interests": "protecting someone's life (GDPR Art. 6(1)(d))",
    "public_task": "a task in the public interest (GDPR Art. 6(1)(e))",
    "legitimate_interests": "our legitimate interests (GDPR Art. 6(1)(f))",
}
_COMPLAINT = {
    Regime.GDPR: (
        "If you think we have not handled your personal data lawfully, you can complain to a data protection "
        "supervisory authority, in particular in the EU or EEA country where you live, where you work, or where "
        "you think the law was broken (GDPR Art. 77). You do not have to contact us first, but our data "
        "protection officer will gladly try to resolve it: {dpo}."
    ),
    Regime.CCPA: (
        "If you think we have not handled your request or your personal information lawfully, you can complain "
        "to the California Privacy Protection Agency (cppa.ca.gov) or to the Attorney General of California "
        "(oag.ca.gov/privacy). You can also contact us first: {contact}."
    ),
}


@dataclass(frozen=True)
class IssuedLetter:
    """A letter as issued: the signed PDF and its SHA-256 (ledgered), the package it embeds and
    the package's SHA-256 (ledgered too)."""

    pdf: bytes
    sha256: str
    package: dict[str, Any]
    package_sha256: str
    filename: str


def access_letter_issue(*, actor: Any, request: DataSubjectRequest) -> IssuedLetter:
    """Issue the signed letter answering an access (GDPR) or know (CCPA) request: the package is
    issued and ledgered, a checkpoint signed, the letter rendered and signed, its SHA-256 ledgered
    (see the module docstring for the steps and what a failure leaves). Needs what the package
    needs: a compliance officer of the project, a searched request of an access kind; a refusal
    raises the service's ``DomainError`` (403, 404, 409) and nothing is issued."""
    import hashlib

    from audits.ledger.receipts import entry_receipts
    from audits.ledger.selectors import latest_checkpoint
    from audits.ledger.services import checkpoint_create
    from audits.reports.pdf import receipt_indexes
    from audits.reports.services import sign_report_pdf

    # The package's service checks the role, the kind (access or know) and the state, in that order.
    package, package_sha256 = dsr_access_package(actor=actor, request=request)
    issued_entry = _package_entry(request, package_sha256)
    checkpoint_create()
    checkpoint = latest_checkpoint()
    assert checkpoint is not None and checkpoint.tree_size > issued_entry  # the package's entry is in the tree
    generated_at = timezone.now().replace(microsecond=0)
    document = access_letter_document(
        request=request, package=package, package_sha256=package_sha256, package_entry=issued_entry,
        checkpoint_text=checkpoint.note, generated_at=generated_at,
    )  # fmt: skip
    document = replace(document, receipts=entry_receipts(receipt_indexes(document), checkpoint=checkpoint))
    pdf = sign_report_pdf(
        build_pdf(document), reason=f"answer to data-subject request {request.reference}", signed_at=generated_at
    )
    sha256 = hashlib.sha256(pdf).hexdigest()
    dsr_letter_record(
        actor=actor, request=request, sha256=sha256, package_sha256=package_sha256, letter_kind=document.kind
    )
    return IssuedLetter(
        pdf=pdf, sha256=sha256, package=package, package_sha256=package_sha256,
        filename=f"{document.kind.replace('_', '-')}-{request.reference}.pdf",
    )  # fmt: skip


def _package_entry(request: DataSubjectRequest, package_sha256: str) -> int:
    """The ledger index of the entry that issued this package (the last one for the request)."""
    from audits.ledger.models import Entry

    entries = Entry.objects.filter(
        subject_type="data_subject_request",
        subject_id=str(request.pk),
        action="data_subject_request.access_package_issued",
    ).order_by("-index")
    for entry in entries[:5]:
        if json.loads(bytes(entry.body)).get("payload", {}).get("sha256") == package_sha256:
            return entry.index
    raise Conflict("package_not_ledgered", f"no ledger entry issued package {package_sha256[:12]}…")


# --- The letter's content ------------------------------------------------------------------------


def access_letter_document(
    *,
    request: DataSubjectRequest,
    package: dict[str, Any],
    package_sha256: str,
    package_entry: int,
    checkpoint_text: str,
    generated_at: dt.datetime,
    org: Any = None,
) -> Report:
    """The letter as a report document (no database reads beyond ``request``'s own row and the
    organisation profile, ``org``, read when not given): plain words to the person, the package
    as ``access-package.json``. A profile that lacks what the letter needs makes it a draft,
    marked on every page: not to be sent."""
    if org is None:
        from governance.selectors import organisation_profile

        org = organisation_profile()
    gdpr = request.regime == Regime.GDPR
    law = "Article 15 of the GDPR" if gdpr else "the California Consumer Privacy Act (CCPA §1798.110)"
    held = package["dataset_versions"]
    records = package["records"]
    incidents = package.get("incidents", [])  # a package issued before they were searched has none
    turns = package.get("transcripts", [])
    missing = "MISSING (see the draft notice)"
    controller = org.controller_name or missing
    received = _day(request.received_at, request.tz)
    summary: list[tuple[str, object]] = [
        ("Your request", f"{request.reference}, received {received} ({request.get_kind_display()})"),
        ("Do we hold data about you?", _held_summary(held, records, incidents, turns)),
        ("Who we are", ", ".join(p for p in (controller, " ".join(org.controller_address.split())) if p)),
        ("How to reach us", (org.ccpa_request_email if not gdpr and org.ccpa_request_email else "")
         or org.controller_contact() or missing),
    ]  # fmt: skip
    if gdpr:
        summary.append(("Our data protection officer", org.dpo_shown() or missing))
    summary.append(("Date of this letter", _day(generated_at, request.tz)))
    sections: list[Section] = [
        Paragraph("Dear requester,"),
        Paragraph(
            f"On {received} you asked us, {controller}, which personal data about you we hold in our "
            f"“{request.project.name}” work, and what we do with it. This letter is our answer, as {law} "
            "requires. It is written for you; the same information, and every record about you, is attached "
            f"to this PDF as the file “{PACKAGE_FILENAME}”, in a form a computer can read (most PDF readers "
            "show attachments under a paper-clip icon)."
        ),
        Heading("In short"),
        KeyValues(summary),
    ]
    if not held and not incidents and not turns:
        sections.append(
            Paragraph(
                "We searched every dataset of this work that our scanner has indexed, the reports in our "
                "register of incidents and the conversations our AI services keep, and found no personal data "
                "about you, so the rest of this letter lists nothing. Your rights, below, still apply."
            )
        )
    if held:
        sections += _what_we_hold(package, held)
        sections += _why_and_who(package, gdpr)
        sections += _models(package)
        sections += _records(records)
    if incidents:
        sections += _incidents(incidents, held_elsewhere=bool(held))
    if turns:
        sections += _conversations(turns)
    sections += _rights(package, request.regime, org)
    sections += [
        Heading("How to check this letter"),
        Paragraph(
            "This PDF carries our digital signature; your PDF reader can show it. The "
            f"attached file “{PACKAGE_FILENAME}” was recorded in our tamper-evident log (entry "
            f"{package_entry}) with this fingerprint (SHA-256), so neither can be changed unnoticed:"
        ),
        Table(["File", "Fingerprint (SHA-256)"], [[PACKAGE_FILENAME, Digest(package_sha256)]], [package_entry]),
    ]
    kind = LETTER_KINDS[Kind(request.kind)]
    title = "Your personal data: our answer to your request" + (
        " (GDPR Art. 15)" if gdpr else " to know (CCPA §1798.110)"
    )
    annex = json.dumps(package, indent=2, ensure_ascii=False, sort_keys=True).encode()
    return Report(
        title=title, scope=f"data-subject request {request.reference}, project {request.project.slug}",
        period_start=request.received_at.date(), period_end=generated_at.date(), generated_at=generated_at,
        checkpoint_text=checkpoint_text, sections=sections, kind=kind, proof_last=True,
        draft_notice=(f"the organisation profile lacks {', '.join(org.missing_for_reports())}: do not send this "
                      "letter; a global admin completes the profile and the letter is issued again")
        if org.missing_for_reports() else "",
        claims=[Claim(fact=f"the SHA-256 of {PACKAGE_FILENAME} (its RFC 8785 form)", entry=package_entry,
                      field="payload.sha256", value=package_sha256)],
        attachments=[Attachment(
            filename=PACKAGE_FILENAME, data=annex, mime_type="application/json",
            description=f"the access package of {request.reference}: your records and what goes with them "
                        f"(SHA-256 of its RFC 8785 form: {package_sha256})",
        )],
    )  # fmt: skip


def _what_we_hold(package: dict[str, Any], held: list[dict[str, Any]]) -> list[Section]:
    categories = package["categories"]
    found = [_IDENTIFIER_WORDS.get(k, k.replace("_", " ").lower()) for k in categories["identifiers_found"]]
    declared = categories["declared"]
    sections: list[Section] = [
        Heading("What we hold about you"),
        Paragraph(
            "We found records about you in these datasets (a dataset is a collection of texts we use; each "
            "version is a fixed copy of it):"
        ),
        Table(["Dataset", "Version", "Records about you"], [[v["dataset"], v["number"], v["records"]] for v in held]),
    ]
    parts = []
    if found:
        parts.append(f"We recognised you in them by your {_join(found)}.")
    if declared:
        parts.append(f"The kinds of personal data these datasets hold are: {_join(declared)}.")
    if parts:
        sections.append(Paragraph(" ".join(parts)))
    return sections


def _why_and_who(package: dict[str, Any], gdpr: bool) -> list[Section]:
    purposes = package["purposes"]
    if gdpr:
        why = Table(
            ["Dataset", "Why we use it", "Our legal basis"],
            [[p["dataset"], p["purpose"] or "not stated", _basis(p["lawful_basis"])] for p in purposes],
        )
    else:
        why = Table(["Dataset", "Why we use it"], [[p["dataset"], p["purpose"] or "not stated"] for p in purposes])
    recipients = package["recipients"]
    transfers = package["third_country_transfers"]
    abroad = "outside the European Economic Area" if gdpr else "outside the United States"
    kept = [[s["dataset"], _retention(s["retention_days"])] for s in package["storage_period"]]
    return [
        Heading("Why we use it"),
        why,
        Heading("Who receives it"),
        Paragraph(
            f"We share it with: {_join(recipients)}." if recipients else "No one outside our organisation receives it."
        ),
        Heading("How long we keep it"),
        Table(["Dataset", "We keep it for"], kept),
        Heading("Where it came from"),
        Table(["Dataset", "Source"], [[s["dataset"], s["source"] or "not recorded"] for s in package["source"]]),
        Heading(f"Transfers {abroad}"),
        Paragraph(
            f"We send it {abroad}, to: {_join(transfers)}. Ask us for a copy of the safeguards that protect it there."
            if transfers
            else f"We do not send it {abroad}."
        ),
    ]


def _models(package: dict[str, Any]) -> list[Section]:
    models, deployments = package["model_versions"], package["deployments"]
    sections: list[Section] = [Heading("AI models trained on it, and where they run")]
    if not models:
        return [*sections, Paragraph("No AI model was trained on the records about you.")]
    trained = [[m["model"], m["number"], _trained_on(m, package["dataset_versions"])] for m in models]
    sections += [
        Paragraph(
            "We used these records to train the AI models below. A trained model is not a database of the "
            "records, but it learns from them and can sometimes repeat parts of its training text; that is "
            "why we test these models for it (security scans) and filter personal data from their answers."
        ),
        Table(["Model", "Version", "Trained on"], trained),
    ]
    if deployments:
        serving = [
            [d["name"], d["environment"], d["state"], _model_name(d["model_version"], models)] for d in deployments
        ]
        sections += [
            Paragraph("These models run in the following services:"),
            Table(["Service", "Where", "Status", "Model version"], serving),
        ]
    else:
        sections.append(Paragraph("None of these models is running in a service."))
    return sections


def _records(records: list[dict[str, Any]]) -> list[Section]:
    sections: list[Section] = [Heading("The records themselves")]
    if len(records) > RECORDS_IN_LETTER:
        return [*sections, Paragraph(f"There are {len(records)} records about you; all are in the attached file.")]
    rows = [[r["dataset"], r["version"], r["record"], _fields(r["fields"])] for r in records]
    return [
        *sections,
        Paragraph("Here they are, exactly as we hold them (the attached file has the same records):"),
        Table(["Dataset", "Version", "Record no.", "Content"], rows),
    ]


def _incidents(incidents: list[dict[str, Any]], *, held_elsewhere: bool) -> list[Section]:
    """The incident reports whose free text names the person, each part that does as written."""
    from incidents.models import Incident

    rows = []
    for incident in incidents:
        for name, text in incident["fields"].items():
            part = str(Incident._meta.get_field(name).verbose_name).capitalize()
            rows.append([incident["reference"], part, _cut(str(text))])
    return [
        Heading("Incident reports that mention you"),
        Paragraph(
            ("We also found you" if held_elsewhere else "We found you")
            + " in our register of incidents: the reports we write when something goes wrong with this work's "
            "AI systems, saying what happened, why, and what we did about it. We keep them to put things right "
            "and, for a serious incident, to report it to the authorities as the EU AI Act (Art. 73) requires. "
            "Here is each part of a report that mentions you, as we hold it (the attached file has the same text):"
        ),
        Table(["Incident", "Part of the report", "What it says"], rows),
    ]


def _conversations(turns: list[dict[str, Any]]) -> list[Section]:
    """The turns of the AI services' transcripts that mention the person, as kept."""
    rows = [[t["deployment"], t["time"][:16].replace("T", " ") + " UTC", _cut(t["prompt"]), _cut(t["completion"])]
            for t in turns]  # fmt: skip
    return [
        Heading("Conversations with our AI services that mention you"),
        Paragraph(
            "Some of our AI services keep what they were asked and what they answered, to learn from the "
            "feedback people give on the answers. These exchanges mention you; here they are as we keep them "
            "(the attached file has the same text):"
        ),
        Table(["Service", "When", "Question", "Answer"], rows),
    ]


def _rights(package: dict[str, Any], regime: str, org: Any) -> list[Section]:
    intro = "You have the right:" if regime == Regime.CCPA else "You have the right to:"
    contact = org.controller_contact() or "MISSING (see the draft notice)"
    text = _COMPLAINT[Regime(regime)].format(dpo=org.dpo_shown() or contact, contact=contact)
    if regime == Regime.GDPR and org.supervisory_authority_name:
        text += f" Our lead supervisory authority is {org.supervisory_authority_shown()}."
    return [
        Heading("Your rights"),
        Paragraph(intro),
        *[Paragraph(f"• {right}") for right in package["rights"]],
        Paragraph(f"To use any of these rights, contact us: {contact}."),
        Heading("How to complain"),
        Paragraph(text),
        Heading("Decisions made by computer"),
        Paragraph(package["automated_decision_making"]),
        Paragraph(f"Yours sincerely,\n{org.controller_name or 'MISSING (see the draft notice)'}"),
    ]


# --- Words ---------------------------------------------------------------------------------------


def _day(moment: dt.datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(tz))
    return f"{local.day} {local:%B %Y}"


def _join(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _held_summary(
    held: list[dict[str, Any]], records: list[dict[str, Any]], incidents: list[dict[str, Any]], turns: list[Any]
) -> str:
    parts = []
    if held:
        datasets = len({v["dataset"] for v in held})
        parts.append(f"{_count(len(records), 'record')} in {_count(datasets, 'dataset')}")
    if incidents:
        parts.append(_count(len(incidents), "incident report"))
    if turns:
        parts.append(_count(len(turns), "conversation") + " with our AI services")
    if not parts:
        return "No. We found no personal data about you."
    return f"Yes: {_join(parts)}."


def _basis(code: str) -> str:
    return _BASIS_WORDS.get(code, code or "not stated")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _retention(days: int | None) -> str:
    if not days:
        return "no period set: ask us"
    if days % 365 == 0:
        years = days // 365
        return f"{years} year{'s' if years > 1 else ''} ({days} days)"
    if days >= 60:
        return f"{days} days (about {round(days / 30.44)} months)"
    return f"{days} days"


def _trained_on(model: dict[str, Any], versions: list[dict[str, Any]]) -> str:
    names = {v["id"]: f"{v['dataset']} v{v['number']}" for v in versions}
    return _join([names.get(i, f"dataset version {i}") for i in model["trained_on"]])


def _model_name(model_version: int, models: list[dict[str, Any]]) -> str:
    for m in models:
        if m["id"] == model_version:
            return f"{m['model']} v{m['number']}"
    return f"model version {model_version}"


def _fields(fields: Any) -> str:
    if not isinstance(fields, dict):
        return str(fields)[:FIELD_CHARS]
    parts = []
    for key, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {_cut(text)}")
    return "\n".join(parts)


def _cut(text: str) -> str:
    if len(text) > FIELD_CHARS:
        return text[:FIELD_CHARS] + "… (cut here; whole in the attached file)"
    return text
