"""The EU AI Act risk classification questionnaire, as data, and the pure rule that turns a set of
answers into a risk class with its reasons. No database here.

The order of the rule follows the Act: a prohibited practice (Art. 5(1)(a)-(h)) makes the system
prohibited whatever else is true; else a product safety component (Art. 6(1), Annex I) or a use in
an Annex III area makes it high-risk, unless (Annex III only) an Art. 6(3) exception applies and
the system does not profile natural persons (profiling always stays high-risk, Art. 6(3) last
subparagraph); else a transparency duty (Art. 50) makes it limited-risk; else it is minimal-risk.
Emotion recognition and biometric categorisation are Annex III point 1 uses as well as Art. 50(3)
duties, so they count as the biometrics area. The use of a general-purpose AI model is recorded
as a reason of its own (the model's provider owes the Art. 53 and, with systemic risk, Art. 55
duties; the system's own class does not change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import DomainError

YES_NO = "yes_no"
ONE_OF = "one_of"
ANY_OF = "any_of"

ANNEX_III_AREAS: dict[str, str] = {
    "biometrics": "Annex III point 1: remote biometric identification, biometric categorisation, emotion recognition",
    "critical_infrastructure": "Annex III point 2: safety components of critical digital infrastructure, road "
    "traffic, water, gas, heating or electricity",
    "education": "Annex III point 3: admission, evaluation of learning outcomes, proctoring in education",
    "employment": "Annex III point 4: recruitment, selection, promotion, termination, task allocation, monitoring "
    "of workers",
    "essential_services": "Annex III point 5: public benefits, creditworthiness and credit scoring, life and health "
    "insurance pricing, emergency call triage",
    "law_enforcement": "Annex III point 6: law enforcement (victim risk, polygraphs, evidence reliability, "
    "re-offending risk, profiling)",
    "migration": "Annex III point 7: migration, asylum and border control management",
    "justice_democracy": "Annex III point 8: administration of justice and democratic processes (elections)",
}

ART_6_3_EXCEPTIONS: dict[str, str] = {
    "none": "no exception claimed",
    "narrow_procedural_task": "Art. 6(3)(a): performs a narrow procedural task",
    "improves_prior_human_activity": "Art. 6(3)(b): improves the result of a previously completed human activity",
    "detects_decision_patterns": "Art. 6(3)(c): detects decision-making patterns or deviations from them, "
    "without replacing or influencing the human assessment without proper human review",
    "preparatory_task": "Art. 6(3)(d): performs a preparatory task to an assessment relevant to an Annex III use",
}


@dataclass(frozen=True)
class Question:
    id: str
    section: str
    text: str
    article: str
    kind: str  # yes_no (true/false), one_of (one choice), any_of (a list of choices, possibly empty)
    choices: tuple[tuple[str, str], ...] = ()

    def allowed(self) -> str:
        if self.kind == YES_NO:
            return "true or false"
        names = ", ".join(name for name, _ in self.choices)
        return f"one of {names}" if self.kind == ONE_OF else f"a list of {names} (possibly empty)"

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "section": self.section, "text": self.text, "article": self.article, "kind": self.kind,
            "choices": [{"value": value, "label": label} for value, label in self.choices],
        }  # fmt: skip


def _prohibited(qid: str, letter: str, text: str) -> Question:
    return Question(qid, "prohibited", text, f"Art. 5(1)({letter})", YES_NO)


QUESTIONS: tuple[Question, ...] = (
    _prohibited("subliminal_manipulation", "a", "Does the system deploy subliminal, purposefully manipulative or "
                "deceptive techniques that materially distort behaviour and cause significant harm?"),
    _prohibited("exploits_vulnerabilities", "b", "Does it exploit vulnerabilities due to age, disability or a "
                "social or economic situation, to materially distort behaviour causing significant harm?"),
    _prohibited("social_scoring", "c", "Does it evaluate or classify people by social behaviour or personal "
                "traits, leading to detrimental or unfavourable treatment (social scoring)?"),
    _prohibited("predictive_policing_profiling", "d", "Does it assess the risk that a person commits a criminal "
                "offence based solely on profiling or personality traits?"),
    _prohibited("untargeted_face_scraping", "e", "Does it create or expand facial recognition databases by "
                "untargeted scraping of facial images from the internet or CCTV footage?"),
    _prohibited("emotion_recognition_work_education", "f", "Does it infer emotions of people in the workplace or in "
                "education institutions (other than for medical or safety reasons)?"),
    _prohibited("biometric_categorisation_sensitive", "g", "Does it categorise people by biometric data to deduce "
                "race, political opinions, trade union membership, religion, sex life or sexual orientation?"),
    _prohibited("realtime_remote_biometric_identification", "h", "Is it used for real-time remote biometric "
                "identification in publicly accessible spaces for law enforcement (outside the Art. 5(2) cases)?"),
    Question("annex_iii_areas", "high_risk", "In which Annex III areas is the system intended to be used?",
             "Art. 6(2), Annex III", ANY_OF, tuple(ANNEX_III_AREAS.items())),
    Question("safety_component", "high_risk", "Is the system a safety component of a product (or itself a product) "
             "covered by the Annex I harmonisation legislation and subject to third-party conformity assessment?",
             "Art. 6(1), Annex I", YES_NO),
    Question("art_6_3_exception", "high_risk", "For an Annex III use: does one of the Art. 6(3) conditions apply "
             "(the system poses no significant risk of harm)?", "Art. 6(3)", ONE_OF,
             tuple(ART_6_3_EXCEPTIONS.items())),
    Question("profiles_natural_persons", "high_risk", "Does the system perform profiling of natural persons?",
             "Art. 6(3), last subparagraph", YES_NO),
    Question("interacts_with_people", "transparency", "Does the system interact directly with natural persons "
             "(a chatbot, an assistant)?", "Art. 50(1)", YES_NO),
    Question("generates_synthetic_content", "transparency", "Does it generate synthetic audio, image, video or "
             "text content?", "Art. 50(2)", YES_NO),
    Question("emotion_recognition_or_biometric_categorisation", "transparency", "Is it an emotion recognition or "
             "biometric categorisation system?", "Art. 50(3), Annex III point 1", YES_NO),
    Question("deep_fake", "transparency", "Does it generate or manipulate deep fakes, or text published to inform "
             "the public on matters of public interest?", "Art. 50(4)", YES_NO),
    Question("uses_gpai_model", "gpai", "Is the system built on a general-purpose AI model (a foundation or large "
             "language model, in-house or from a third party)?", "Art. 3(63), Art. 53, Art. 55", YES_NO),
)  # fmt: skip

QUESTIONS_BY_ID: dict[str, Question] = {question.id: question for question in QUESTIONS}


def answer_in_words(question: Question, value: Any) -> str:
    """An answer as a reader should see it: yes or no, or the words of the choices it names."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    words = dict(question.choices)
    chosen = [value] if isinstance(value, str) else list(value or [])
    return "; ".join(words.get(choice, choice) for choice in chosen) or "none"


TRANSPARENCY_IDS = (
    "interacts_with_people", "generates_synthetic_content", "emotion_recognition_or_biometric_categorisation",
    "deep_fake",
)  # fmt: skip


def answers_clean(answers: Any) -> dict[str, Any]:
    """The answers, checked: every question answered, by its id, with a value it admits. Raise
    ``DomainError`` (400) naming each question that is unknown, missing or wrongly answered."""
    if not isinstance(answers, dict):
        raise DomainError(
            "invalid_input", "answers: a JSON object of question id -> answer",
            fields={"answers": [f"expected an object, got {type(answers).__name__}"]},
        )  # fmt: skip
    problems: dict[str, list[str]] = {}
    for qid in sorted(set(answers) - set(QUESTIONS_BY_ID)):
        problems[f"answers.{qid}"] = [f"no question {qid!r} in the questionnaire"]
    clean: dict[str, Any] = {}
    for question in QUESTIONS:
        if question.id not in answers:
            problems[f"answers.{question.id}"] = [f"not answered: {question.allowed()}"]
            continue
        value = answers[question.id]
        names = [name for name, _ in question.choices]
        if question.kind == YES_NO:
            ok = isinstance(value, bool)
        elif question.kind == ONE_OF:
            ok = isinstance(value, str) and value in names
        else:
            ok = isinstance(value, list) and all(isinstance(v, str) and v in names for v in value)
            value = sorted(set(value)) if ok else value
        if not ok:
            problems[f"answers.{question.id}"] = [f"{question.allowed()}, not {value!r}"]
        else:
            clean[question.id] = value
    if problems:
        named = "; ".join(f"{name.removeprefix('answers.')}: {what[0]}" for name, what in problems.items())
        raise DomainError(
            "invalid_input", f"the questionnaire's answers are incomplete or wrong: {named}", fields=problems
        )
    return clean


def _reason(article: str, text: str) -> dict[str, str]:
    return {"article": article, "text": text}


def classify(answers: Any) -> tuple[str, list[dict[str, str]]]:
    """The risk class (``systems.models.RiskClass`` values) the answers give, and why, article by
    article. The answers are checked first (``answers_clean``)."""
    answers = answers_clean(answers)
    reasons: list[dict[str, str]] = []
    transparency = [QUESTIONS_BY_ID[qid] for qid in TRANSPARENCY_IDS if answers[qid]]
    gpai = (
        [_reason("Art. 53, Art. 55", "built on a general-purpose AI model: its provider owes the Art. 53 duties "
                 "(technical documentation, information to downstream providers, copyright policy, training "
                 "content summary) and, for a model with systemic risk, Art. 55; keep what the provider gives")]
        if answers["uses_gpai_model"] else []
    )  # fmt: skip

    prohibited = [q for q in QUESTIONS if q.section == "prohibited" and answers[q.id]]
    if prohibited:
        reasons = [_reason(q.article, f"prohibited practice: {q.text}") for q in prohibited]
        return "prohibited", reasons + gpai

    areas = list(answers["annex_iii_areas"])
    if answers["emotion_recognition_or_biometric_categorisation"] and "biometrics" not in areas:
        areas.append("biometrics")
        reasons.append(_reason("Annex III point 1(b), 1(c)", "emotion recognition or biometric categorisation is "
                               "an Annex III biometrics use"))  # fmt: skip
    exception = answers["art_6_3_exception"]
    if answers["safety_component"]:
        component = "safety component of a product under Annex I legislation with third-party conformity assessment"
        reasons.append(_reason("Art. 6(1), Annex I", f"{component}; Art. 6(3) exceptions do not apply"))
    for area in areas:
        reasons.append(_reason("Art. 6(2), Annex III", ANNEX_III_AREAS[area]))
    high = bool(answers["safety_component"])
    if areas and not high:
        if exception == "none":
            high = True
        elif answers["profiles_natural_persons"]:
            high = True
            reasons.append(_reason("Art. 6(3), last subparagraph", f"{ART_6_3_EXCEPTIONS[exception]} is claimed, "
                                   "but the system profiles natural persons: it stays high-risk"))  # fmt: skip
        else:
            documented = "the provider documents this assessment and registers the system (Art. 49(2))"
            exempted = f"not high-risk: {ART_6_3_EXCEPTIONS[exception]}; {documented}"
            reasons.append(_reason("Art. 6(3), Art. 6(4)", exempted))
    duties = [_reason(q.article, f"transparency duty: {q.text}") for q in transparency]
    if high:
        return "high", reasons + duties + gpai
    if transparency:
        return "limited", reasons + duties + gpai
    reasons.append(_reason("Art. 95", "no prohibited practice, no high-risk use, no transparency duty: minimal "
                           "risk (voluntary codes of conduct)"))  # fmt: skip
    return "minimal", reasons + gpai


def claims_exception(answers: dict[str, Any]) -> bool:
    """Whether answers with an Annex III use stay below high-risk by an Art. 6(3) exception."""
    areas = answers.get("annex_iii_areas") or answers.get("emotion_recognition_or_biometric_categorisation")
    return bool(areas) and answers.get("art_6_3_exception", "none") != "none" and not answers.get("safety_component")
