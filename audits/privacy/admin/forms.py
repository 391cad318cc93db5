"""The forms of the data-subject request pages. They check the shape of the input (required,
lengths, a known time zone); the services check everything else and word their own refusals."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from django import forms

from audits.privacy.models import KINDS_BY_REGIME, Channel, Kind, Regime, ReviewOutcome
from common.api import LEDGERED_TEXT_HELP

TIME_ZONES = sorted(available_timezones())
WALL_CLOCK_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


class WallClockField(forms.DateTimeField):
    """A date and time as the clock of the office showed it, with no zone: the form places it in
    the request's time zone (Django's own field would place it in the server's)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(input_formats=WALL_CLOCK_FORMATS, **kwargs)

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            return value.replace(tzinfo=None)
        return forms.fields.BaseTemporalField.to_python(self, str(value).strip())


def _ledgered(label: str, *, max_length: int = 2000, help_text: str = "", **kwargs: Any) -> forms.CharField:
    return forms.CharField(
        label=label, max_length=max_length, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=f"{help_text} {LEDGERED_TEXT_HELP}".strip(), **kwargs,
    )  # fmt: skip


class ReceiveForm(forms.Form):
    """A request as it arrived. The identifiers are sealed in the ledger's vault at once; the
    pages show their kinds and keyed hashes only."""

    project = forms.ModelChoiceField(queryset=None, help_text="the project whose data the request is about")  # type: ignore[arg-type]
    regime = forms.ChoiceField(choices=Regime.choices)
    kind = forms.ChoiceField(
        choices=[
            (Regime(regime).label, [(kind, Kind(kind).label) for kind in kinds])
            for regime, kinds in KINDS_BY_REGIME.items()
        ],
        help_text="a kind of the regime chosen",
    )
    channel = forms.ChoiceField(choices=Channel.choices, help_text="how the request was made")
    tz = forms.ChoiceField(
        label="Time zone", choices=[(tz, tz) for tz in TIME_ZONES], initial="UTC",
        help_text="of the office that acts: the day of receipt and every deadline are counted in it",
    )  # fmt: skip
    received_at = WallClockField(label="Received", help_text="date and time of receipt, in that time zone")
    email = forms.CharField(label="E-mail address", required=False, max_length=500)
    phone = forms.CharField(label="Phone number", required=False, max_length=500)
    name = forms.CharField(label="Name", required=False, max_length=500)

    IDENTIFIER_FIELDS = ("email", "phone", "name")

    def __init__(self, *args: Any, projects: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects  # type: ignore[attr-defined]
        if projects.count() == 1:
            self.fields["project"].initial = projects.first()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not any(data.get(name, "").strip() for name in self.IDENTIFIER_FIELDS):
            raise forms.ValidationError("give at least one identifier of the person: e-mail, phone or name")
        return data

    def request_fields(self) -> list[Any]:
        return [self[name] for name in self.fields if name not in self.IDENTIFIER_FIELDS]

    def person_fields(self) -> list[Any]:
        return [self[name] for name in self.IDENTIFIER_FIELDS]

    def identifiers(self) -> list[dict[str, str]]:
        return [
            {"kind": name, "value": self.cleaned_data[name].strip()}
            for name in self.IDENTIFIER_FIELDS
            if self.cleaned_data[name].strip()
        ]

    def received(self) -> datetime:
        return self.cleaned_data["received_at"].replace(tzinfo=ZoneInfo(self.cleaned_data["tz"]))


class VerifyIdentityForm(forms.Form):
    method = _ledgered(
        "How the identity was verified", max_length=200,
        help_text='The method, not the evidence ("reply from the address on file").',
    )  # fmt: skip


class ExtendForm(forms.Form):
    reason = _ledgered("Reason for the extension", help_text="Told to the requester with the new deadline.")


class DenyForm(forms.Form):
    basis = _ledgered("Legal basis of the denial", help_text="E.g. GDPR Art. 12(5) manifestly unfounded.")
    nature = forms.CharField(
        label="Response sent", required=False, max_length=2000, help_text='How the requester was told ("by e-mail").'
    )


class WithdrawForm(forms.Form):
    reason = _ledgered("How the withdrawal was received")


class CompleteForm(forms.Form):
    nature = forms.CharField(
        label="Response sent", max_length=2000, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text='The nature of the response, for the request log ("package sent by e-mail").',
    )  # fmt: skip


class EraseConfirmForm(forms.Form):
    reference = forms.CharField(label="Type the request's reference to confirm", max_length=32)
    plan = forms.CharField(widget=forms.HiddenInput, max_length=80)  # "sha256:" and 64 hex digits

    def __init__(self, *args: Any, expected: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.fields["reference"].widget.attrs.update({"autocomplete": "off"})

    def clean_reference(self) -> str:
        typed = self.cleaned_data["reference"].strip()
        if typed != self.expected:
            raise forms.ValidationError(f"type {self.expected} exactly; nothing was erased")
        return typed


class ReviewCloseForm(forms.Form):
    outcome = forms.ChoiceField(choices=ReviewOutcome.choices)
    note = forms.CharField(
        widget=forms.Textarea, help_text=f"Retrained as which version, or why it may stay. {LEDGERED_TEXT_HELP}"
    )
