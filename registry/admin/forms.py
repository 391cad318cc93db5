"""The forms of the registry's admin pages. They check the shape of the input (as the API's
serializers do); the services check roles and rules and say why they refuse."""

from __future__ import annotations

from typing import Any

from django import forms

from common.api import LEDGERED_TEXT_HELP
from governance.models import Project
from registry.models import FindingState, LawfulBasis, Review


class LinesField(forms.CharField):
    """A list of short texts, typed one per line (the dataset's categories, recipients, ...)."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "one per line")
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().clean(value) or ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        too_long = [line for line in lines if len(line) > 200]
        if too_long:
            raise forms.ValidationError(f"a line is at most 200 characters; {len(too_long)} line(s) are longer")
        return lines


def _ledgered(help_text: str) -> str:
    return f"{help_text} {LEDGERED_TEXT_HELP}"


class DatasetRegisterForm(forms.Form):
    """What ``dataset_create`` takes: the record of processing (GDPR Art. 30) of a new dataset.
    The data steward is the person registering it, as through the API."""

    required_css_class = "required"

    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), help_text="one of the projects where you are a data steward"
    )
    slug = forms.SlugField(max_length=100, help_text="letters, digits, - and _; unique in the project")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_ledgered("Why the data is processed."),
    )
    lawful_basis = forms.ChoiceField(choices=LawfulBasis.choices, help_text="GDPR Art. 6(1)")
    retention_days = forms.IntegerField(min_value=1, max_value=36600, help_text="1 to 36600 (100 years)")
    source = forms.CharField(max_length=500, help_text="where the data comes from")
    data_subject_categories = LinesField(label="Data subject categories")
    personal_data_categories = LinesField(label="Personal data categories")
    recipients = LinesField(label="Recipients")
    third_country_transfers = LinesField(
        label="Third-country transfers", help_text="one per line: country and safeguard"
    )

    def __init__(self, *args: Any, projects: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects  # type: ignore[attr-defined]
        if projects.count() == 1:
            self.fields["project"].initial = projects.first()


class UploadForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text="JSONL, CSV, Parquet or text (.jsonl, .ndjson, .csv, .parquet, .txt)",
        error_messages={"required": "Choose a file to upload.", "missing": "Choose a file to upload."},
    )


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[(r.value, f"{r.value}: {r.label}") for r in (Review.CONFIRMED, Review.FALSE_POSITIVE,
                                                            Review.ANONYMISATION_REQUIRED)],
        widget=forms.RadioSelect,
    )  # fmt: skip
    note = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=LEDGERED_TEXT_HELP,
    )  # fmt: skip


class MarkForm(forms.Form):
    state = forms.ChoiceField(choices=FindingState.choices)
    # A false positive can also go on the project's allow-list (registry.services.pii_finding_mark).
    allow = forms.ChoiceField(
        required=False,
        choices=[
            ("", "no"),
            ("value", "this value (kept as its keyed hash)"),
            ("pattern", "values matching the pattern below"),
        ],
        label="Also allow, for this entity type",
        help_text="only with false positive: the project's next scans do not report it again",
    )
    allow_pattern = forms.CharField(
        required=False,
        max_length=200,
        label="Pattern",
        help_text="a regular expression that matches this finding's whole value, e.g. [0-9a-f]{8,16}",
        widget=forms.TextInput(attrs={"size": 40, "autocomplete": "off"}),
    )


class SubmitForm(forms.Form):
    comment = forms.CharField(
        required=False, max_length=2000, widget=forms.TextInput(attrs={"size": 60}), help_text=LEDGERED_TEXT_HELP
    )
