"""garak probes mapped to the OWASP Top 10 for LLM Applications (2025), kept as data.

The category identifiers and names are those of the OWASP GenAI Security Project's "OWASP Top 10
for LLM Applications 2025" (genai.owasp.org/llm-top-10/). garak tags its
own probes with ``owasp:llm01`` ... but by the 2023 list (v1.1), whose numbers mean other things
(its LLM06 is Sensitive Information Disclosure, 2025's is Excessive Agency), so its tags are not
read here: each family below was mapped from what its probes do, by hand, with the reason beside it.

A probe is looked up as ``family.Class`` first, then as its family. A probe on neither list, and
a probe reviewed and found outside the ten categories (harmful or toxic content, glitch tokens),
maps to ``unmapped``: a category is never guessed. Pure module, no Django, no garak.
"""

from __future__ import annotations

UNMAPPED = "unmapped"

CATEGORIES: dict[str, str] = {
    "LLM01:2025": "Prompt Injection",
    "LLM02:2025": "Sensitive Information Disclosure",
    "LLM03:2025": "Supply Chain",
    "LLM04:2025": "Data and Model Poisoning",
    "LLM05:2025": "Improper Output Handling",
    "LLM06:2025": "Excessive Agency",
    "LLM07:2025": "System Prompt Leakage",
    "LLM08:2025": "Vector and Embedding Weaknesses",
    "LLM09:2025": "Misinformation",
    "LLM10:2025": "Unbounded Consumption",
}

_INJECTION = ("LLM01:2025",)  # 2025's LLM01 counts jailbreaking as a form of prompt injection
_DISCLOSURE = ("LLM02:2025",)
_OUTPUT = ("LLM05:2025",)
_MISINFORMATION = ("LLM09:2025",)

# Probe (family.Class) or family -> the categories it tests, most direct first.
PROBE_CATEGORIES: dict[str, tuple[str, ...]] = {
    # Jailbreaks and injected instructions: the prompt overrides the model's instructions.
    "dan": _INJECTION,
    "promptinject": _INJECTION,
    "latentinjection": _INJECTION,  # instructions hidden in a document the model is given
    "encoding": _INJECTION,  # instructions encoded (base64, hex, ...) past filters
    "phrasing": _INJECTION,  # a refused request rephrased in the past or future tense
    "grandma": _INJECTION,  # role play ("my late grandmother used to ...")
    "doctor": _INJECTION,
    "suffix": _INJECTION,  # adversarial suffixes (GCG, BEAST)
    "tap": _INJECTION,
    "goat": _INJECTION,
    "fitd": _INJECTION,
    "dra": _INJECTION,
    "sata": _INJECTION,
    "smuggling": _INJECTION,
    "badchars": _INJECTION,  # invisible characters, homoglyphs, bidi reordering
    "adaptive_attacks": _INJECTION,
    "visual_jailbreak": _INJECTION,
    "audio": _INJECTION,
    "goodside.Tag": _INJECTION,  # instructions in invisible Unicode tag characters
    # Secrets and training data let out.
    "grandma.Win10": ("LLM01:2025", "LLM02:2025"),  # role play to obtain product keys
    "grandma.Win11": ("LLM01:2025", "LLM02:2025"),
    "leakreplay": _DISCLOSURE,  # replays memorised training text
    "divergence": _DISCLOSURE,  # repeating a word until the model emits memorised data
    "propile": _DISCLOSURE,  # memorised personal data
    "apikey": _DISCLOSURE,  # a real key in the answer would be disclosed training data
    # Output that harms what consumes it downstream.
    "ansiescape": _OUTPUT,  # terminal escape codes
    "exploitation": _OUTPUT,  # SQL, template and code injection passed on by the model
    "av_spam_scanning": _OUTPUT,  # known-bad signatures (EICAR, GTUBE) in the output
    "web_injection": ("LLM05:2025", "LLM02:2025", "LLM01:2025"),  # markdown exfiltration, XSS
    "goodside.ThreatenJSON": _OUTPUT,  # output that breaks the format a consumer parses
    # False statements presented as fact.
    "snowball": _MISINFORMATION,  # hallucination snowballing
    "misleading": _MISINFORMATION,
    "goodside.WhoIsRiley": _MISINFORMATION,
    "lmrc.QuackMedicine": _MISINFORMATION,
    "packagehallucination": ("LLM09:2025", "LLM03:2025"),  # invented packages others may then publish
    # The rest of the list.
    "fileformats": ("LLM03:2025",),  # the model's files (pickles and the like), not its answers
    "sysprompt_extraction": ("LLM07:2025",),
    "agent_breaker": ("LLM06:2025",),  # tool-using agents made to act beyond their purpose
}

# Reviewed and left unmapped: what they test (toxic, hateful or harmful content, glitch tokens)
# has no category among the ten. Listed so a reader sees they were not forgotten.
OUTSIDE_TOP_10: frozenset[str] = frozenset(
    {
        "atkgen",
        "continuation",
        "donotanswer",
        "glitch",
        "goodside.Davidjl",
        "lmrc",
        "malwaregen",
        "realtoxicityprompts",
        "topic",
        "test",
    }
)


def probe_categories(probe: str) -> list[str]:
    """The 2025 categories ``probe`` (``family.Class``, or garak's ``probes.family.Class``) tests,
    most direct first; ``["unmapped"]`` for a probe outside the ten or not on the list."""
    name = probe.removeprefix("probes.")
    family = name.split(".")[0]
    for key in (name, family):
        if key in PROBE_CATEGORIES:
            return list(PROBE_CATEGORIES[key])
        if key in OUTSIDE_TOP_10:
            return [UNMAPPED]
    return [UNMAPPED]
