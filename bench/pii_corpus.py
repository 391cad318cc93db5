"""A labelled corpus that looks like fine-tuning data: support tickets and chat turns.

Most records are clean. The others hold people's names from many cultures (Indonesian among
them), places, e-mail addresses, phone numbers in several national formats (+62 among them) and
IBANs with valid check digits; every planted value's span and entity type is known, so precision
and recall can be measured exactly. Clean records carry what scanners mistake for personal data:
capitalised product words at the start of a sentence ("Billing", "Checkout"), hexadecimal
request ids and commit hashes, order numbers, versions and amounts.

``labelled(n, seed)`` returns ``LabelledRecord``s; ``corpus(n, seed)`` their texts. Deterministic
for a seed. Used by ``bench.pii``, ``bench.pii_quality`` and the tests; nothing here is read at run
time by the service.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

FIRST = (
    "Budi", "Siti", "Dewi", "Agus", "Putri", "Rizky", "Wayan", "Ketut", "Ayu", "Hendra",  # Indonesian
    "James", "Emily", "Oliver", "Sarah", "Michael", "Hannah", "Thomas", "Laura",  # English
    "Carlos", "Lucia", "Javier", "Camila", "Mateo", "Valentina",  # Spanish
    "Priya", "Rahul", "Ananya", "Vikram", "Deepika", "Arjun",  # Indian
    "Chinedu", "Ngozi", "Oluwaseun", "Amara", "Kwame", "Abena",  # West African
    "Wei", "Mei", "Jun", "Xiaoling", "Hiroshi", "Yuki", "Minji", "Seojun",  # East Asian
    "Fatima", "Omar", "Layla", "Yusuf", "Aisha", "Karim",  # Arabic
    "Katarzyna", "Piotr", "Agnieszka", "Tomasz", "Jurgen", "Anneliese", "Lars", "Ingrid",  # European
)  # fmt: skip
LAST = (
    "Santoso", "Rahayu", "Lestari", "Wijaya", "Kusuma", "Hidayat", "Setiawan", "Pratama", "Nugroho",
    "Saputra", "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Garcia", "Martinez", "Fernandez",
    "Lopez", "Sharma", "Patel", "Iyer", "Reddy", "Okafor", "Adeyemi", "Mensah", "Chen", "Wang",
    "Zhang", "Tanaka", "Suzuki", "Kim", "Park", "Haddad", "Rahman", "Khalil", "Kowalski",
    "Nowak", "Schmidt", "Fischer", "Johansson", "Larsen",
)  # fmt: skip
PLACES = (
    "Jakarta", "Surabaya", "Bandung", "Yogyakarta", "Denpasar", "Medan", "London", "Manchester",
    "Berlin", "Munich", "Madrid", "Barcelona", "Lagos", "Nairobi", "Mumbai", "Bangalore", "Toronto",
    "Chicago", "Seattle", "Paris", "Warsaw", "Stockholm", "Osaka", "Seoul", "Singapore", "Cairo",
)  # fmt: skip
DOMAINS = ("example.com", "example.org", "mail.example.net", "example.co.id")
# Phone formats (national conventions); each "#" becomes a digit, each "N" a digit from 1 to 9.
# All are numbers python-phonenumbers calls valid (no reserved fictional ranges).
PHONES = (
    "+62 812-####-####", "+62 21 ### ####", "0812########", "+44 20 7946 ####", "+44 7812 ######",
    "(212) 555-0###", "+1 415 555 0###", "+49 30 901820##", "+91 98##0 #####", "+234 803 ### ####",
    "+81 3-N###-####", "+33 1 ## ## ## ##",
)  # fmt: skip
IBAN_LAYOUTS = {"DE": 18, "GB": (4, 14), "FR": 23, "NL": (4, 10), "ES": 20, "PL": 24}

CLEAN = (
    "{Word} page shows an error after the update was deployed, the agent restarted the session.",
    "Order {order} was delayed, the warehouse checks returned items before approving credit.",
    "The refund for invoice {order} takes a few business days to reach the original card.",
    "{Word} team escalated request {hex} because the payment page timed out twice.",
    "Please summarise the conversation and suggest a polite reply about the late delivery.",
    "Version {version} fixed the crash when uploading a file larger than {amount} MB.",
    "The customer asked whether the premium plan includes priority support on weekends.",
    "{Word} failed with trace id {hex}; retrying the job after {amount} seconds worked.",
    "Commit {hex} changed the discount rules, so the total now shows {amount} items.",
    "Translate the following product description into formal English for the catalogue.",
    "The assistant should apologise for the inconvenience and offer a replacement item.",
    "{Word} settings were reset; the user could not find the export button afterwards.",
    "Explain in two sentences why the subscription renewal failed and what the user should do next.",
    "The reply should be friendly, short, and avoid promising a delivery date we cannot keep.",
    "Write a haiku about autumn rain falling on a quiet harbour town.",
    "Classify the sentiment of this review as positive, negative or neutral.",
    "The agent confirmed that the warranty covers the screen but not accidental water damage.",
    "Rewrite the paragraph below so that a ten year old can understand it.",
    "Customers often ask how to change the delivery address after the order is placed.",
    "The support macro for lost passwords links to the reset page and expires after one hour.",
    "Summarise the main complaint and list the steps the agent already tried.",
    "The chatbot must not give legal or medical advice and should suggest a professional instead.",
    "Answer the question using only the information in the knowledge base article.",
    "A good response acknowledges the problem, explains the cause and offers a clear next step.",
)  # fmt: skip
WORDS = ("Billing", "Checkout", "Shipping", "Account", "Payments", "Login", "Inventory", "Refunds")
PERSONAL = (
    "Hi, my name is {person} and I live in {place}. Please call me on {phone}.",
    "Customer {person} from {place} wrote to {email} asking about the refund.",
    "{person} reported that the parcel never arrived in {place}.",
    "Please transfer the deposit to IBAN {iban} in the name of {person}.",
    "Contact: {email}, phone {phone}. The order was shipped to {place}.",
    "User: I am {person}, my email is {email}. Assistant: Thank you, {first}, I will check.",
    "The technician visited {person} at the {place} office and left a number, {phone}.",
    "Refund of the duplicate charge goes to account {iban}; confirmation sent to {email}.",
    "Agent note: spoke with {person}; callback requested at {phone}.",
    "Our courier in {place} could not reach {person} on {phone}.",
)  # fmt: skip


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int


@dataclass
class LabelledRecord:
    text: str
    spans: list[Span] = field(default_factory=list)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def iban(rng: random.Random) -> str:
    """A random IBAN of a real country layout with valid check digits (ISO 13616, mod 97)."""
    country = rng.choice(sorted(IBAN_LAYOUTS))
    layout = IBAN_LAYOUTS[country]
    if isinstance(layout, tuple):
        letters, digits = layout
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters)) + _digits(rng, digits)
    else:
        bban = _digits(rng, layout)
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def phone(rng: random.Random) -> str:
    digits = {"#": string.digits, "N": string.digits[1:]}
    return "".join(rng.choice(digits[ch]) if ch in digits else ch for ch in rng.choice(PHONES))


def _fill(template: str, values: dict[str, tuple[str, str | None]]) -> LabelledRecord:
    """Replace each ``{slot}`` by its value, recording the span of the labelled ones."""
    out, spans, i = [], [], 0
    length = 0
    while i < len(template):
        if template[i] == "{":
            j = template.index("}", i)
            value, entity = values[template[i + 1 : j]]
            if entity:
                spans.append(Span(entity, length, length + len(value)))
            out.append(value)
            length += len(value)
            i = j + 1
        else:
            out.append(template[i])
            length += 1
            i += 1
    return LabelledRecord("".join(out), spans)


def _record(rng: random.Random, personal: bool) -> LabelledRecord:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    values: dict[str, tuple[str, str | None]] = {
        "Word": (rng.choice(WORDS), None),
        "order": (f"#{_digits(rng, 6)}", None),
        "hex": ("".join(rng.choice("0123456789abcdef") for _ in range(rng.choice((8, 12, 16)))), None),
        "version": (f"{rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(10)}", None),
        "amount": (str(rng.randrange(2, 500)), None),
    }
    if not personal:
        # Two or three sentences, each with its own values: few records repeat exactly.
        parts = []
        for _ in range(rng.choice((2, 3))):
            values |= {
                "Word": (rng.choice(WORDS), None),
                "order": (f"#{_digits(rng, 6)}", None),
                "hex": ("".join(rng.choice("0123456789abcdef") for _ in range(rng.choice((8, 12, 16)))), None),
                "amount": (str(rng.randrange(2, 500)), None),
            }
            parts.append(_fill(rng.choice(CLEAN), values))
        return LabelledRecord(" ".join(p.text for p in parts))
    user = f"{first}.{last}".lower() if rng.random() < 0.5 else f"{first[0]}{last}{rng.randrange(100)}".lower()
    values |= {
        "person": (f"{first} {last}", "PERSON"),
        "first": (first, "PERSON"),
        "place": (rng.choice(PLACES), "LOCATION"),
        "email": (f"{user}@{rng.choice(DOMAINS)}", "EMAIL_ADDRESS"),
        "phone": (phone(rng), "PHONE_NUMBER"),
        "iban": (iban(rng), "IBAN_CODE"),
    }
    head = _fill(rng.choice(PERSONAL), values)
    if rng.random() < 0.5:  # a clean sentence after it, as tickets have
        tail = _fill(rng.choice(CLEAN), values)
        offset = len(head.text) + 1
        moved = [Span(s.entity, s.start + offset, s.end + offset) for s in tail.spans]
        return LabelledRecord(f"{head.text} {tail.text}", head.spans + moved)
    return head


def iter_labelled(n: int, seed: int = 28, personal_share: float = 0.3) -> Iterator[LabelledRecord]:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    for _ in range(n):
        yield _record(rng, rng.random() < personal_share)


def labelled(n: int, seed: int = 28, personal_share: float = 0.3) -> list[LabelledRecord]:
    return list(iter_labelled(n, seed, personal_share))


def corpus(n: int, seed: int = 28, personal_share: float = 0.3) -> list[str]:
    return [r.text for r in iter_labelled(n, seed, personal_share)]
