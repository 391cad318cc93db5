"""Special-category data in bias evaluations: what the requester of an evaluation must record when
its sensitive feature is special-category personal data (GDPR Art. 9(1)), kept as data.

Processing such data to detect and correct bias needs a legal basis. The one this service knows is
Regulation (EU) 2024/1689 (the AI Act), Art. 10(5): processing strictly necessary for bias
detection and correction in high-risk AI systems, under the safeguards its points (a) to (f)
list. An organisation that relies on the amendment of that article by the Digital Omnibus
instead names it as its own choice; this module asserts nothing about that amendment's text or
dates beyond its name. The choice, the category and the safeguards confirmed are stored on the
evaluation and in its ledger entry; the service refuses a request that misses one of them.
Pure module, no Django.
"""

from __future__ import annotations

# GDPR Art. 9(1), in its order.
SPECIAL_CATEGORIES: dict[str, str] = {
    "racial_or_ethnic_origin": "racial or ethnic origin",
    "political_opinions": "political opinions",
    "religious_or_philosophical_beliefs": "religious or philosophical beliefs",
    "trade_union_membership": "trade union membership",
    "genetic_data": "genetic data",
    "biometric_data": "biometric data processed to identify a natural person uniquely",
    "health": "data concerning health",
    "sex_life_or_sexual_orientation": "data concerning a natural person's sex life or sexual orientation",
}

LEGAL_BASES: dict[str, str] = {
    "ai_act_art_10_5": "EU AI Act (Regulation (EU) 2024/1689) Art. 10(5)",
    "ai_act_art_10_5_digital_omnibus": "Art. 10(5) as amended (Digital Omnibus, 2026)",
}

# AI Act Art. 10(5)(a)-(f), in short: the conditions under which the processing may take place.
SAFEGUARDS: dict[str, str] = {
    "a": "bias detection and correction cannot be effectively fulfilled by processing other data, "
    "including synthetic or anonymised data",
    "b": "the data are subject to technical limitations on re-use and state-of-the-art security and "
    "privacy-preserving measures, including pseudonymisation",
    "c": "the data are secured and protected, with strict controls and documentation of access, so that "
    "only authorised persons with confidentiality obligations have access",
    "d": "the data are not transmitted, transferred or otherwise accessed by other parties",
    "e": "the data are deleted once the bias has been corrected or the data reach the end of their "
    "retention period, whichever comes first",
    "f": "the records of processing activities state why processing special categories was strictly "
    "necessary to detect and correct bias and why other data could not achieve it",
}


def legal_basis_problems(
    *, sensitive_feature: str, special_category: str, legal_basis: str, safeguards_confirmed: list[str],
    profile_categories: dict[str, str],
) -> list[tuple[str, str]]:  # fmt: skip
    """(field, message) for each thing wrong with a request's record of its legal basis; empty
    when it is complete. The feature is special-category when the request says so
    (``special_category``) or the profile lists it (``special_category_features``); then a basis
    of :data:`LEGAL_BASES` and every safeguard of :data:`SAFEGUARDS` must be given. A basis or
    safeguards given for a feature that is not special-category are refused too: a record that
    claims a basis for nothing is a mistake to catch, not to store."""
    problems: list[tuple[str, str]] = []
    marked = profile_categories.get(sensitive_feature, "")
    if special_category and special_category not in SPECIAL_CATEGORIES:
        problems.append(
            ("special_category", f"unknown category {special_category!r}; known: {', '.join(SPECIAL_CATEGORIES)}")
        )
    elif marked and special_category and special_category != marked:
        problems.append(
            ("special_category", f"the profile marks {sensitive_feature!r} as {marked!r}, not {special_category!r}")
        )
    category = special_category or marked
    if legal_basis and legal_basis not in LEGAL_BASES:
        problems.append(("legal_basis", f"unknown legal basis {legal_basis!r}; known: {', '.join(LEGAL_BASES)}"))
    unknown = [s for s in safeguards_confirmed if s not in SAFEGUARDS]
    if unknown:
        listed = ", ".join(SAFEGUARDS)
        problems.append(("safeguards_confirmed", f"unknown safeguards {unknown}; Art. 10(5) lists {listed}"))
    if category:
        if not legal_basis:
            problems.append((
                "legal_basis",
                f"{sensitive_feature!r} is special-category data ({category}): name the legal basis for processing "
                f"it for bias detection, one of {', '.join(LEGAL_BASES)}",
            ))  # fmt: skip
        missing = [s for s in SAFEGUARDS if s not in safeguards_confirmed]
        if missing:
            problems.append((
                "safeguards_confirmed",
                f"{sensitive_feature!r} is special-category data ({category}): confirm every safeguard of "
                f"Art. 10(5); missing: {', '.join(f'({s})' for s in missing)}",
            ))  # fmt: skip
    elif legal_basis or safeguards_confirmed:
        field = "legal_basis" if legal_basis else "safeguards_confirmed"
        problems.append((
            field,
            f"{sensitive_feature!r} is not marked as special-category data: set special_category to record a "
            "legal basis for it",
        ))  # fmt: skip
    return problems
