"""The organisation profile (one row): the facts about the organisation that the compliance reports
print. A global admin fills it in and changes it here; the form saves through
``organisation_profile_update`` (never the admin's default save), which checks who may and ledgers
every change. Compliance officers and auditors of any project, and the organisation-wide auditors,
read it. The page says what the reports still lack and when, by whom and in which ledger entry it
was last changed.

The first form is prefilled from the ``REPORTS_*`` settings where they are set (a deployment that
configured them before the profile existed keeps its values), and the security measures with those
this service itself takes, for the admin to complete: nothing is saved until they save it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from common.errors import DomainError
from common.security_log import refusal
from governance.models import OrganisationProfile
from governance.permissions import is_platform_admin
from governance.selectors import organisation_profile_may_read
from governance.services import organisation_profile_update

# The measures this service itself takes: a start for the admin's own list.
SERVICE_OWN_MEASURES = (
    "role-based access per project; approvals under separation of duties; an append-only signed ledger; "
    "personal data in the ledger sealed per data subject; content-addressed artifact storage"
)
_SAVED = "_organisation_profile_saved"
_REFUSED = "_organisation_profile_refused"


def initial_from_settings() -> dict[str, str]:
    """The first form's values: the ``REPORTS_*`` settings that are set."""
    contact = settings.REPORTS_CONTROLLER_CONTACT
    initial = {
        "controller_name": settings.REPORTS_CONTROLLER,
        "controller_email" if "@" in contact else "controller_phone": contact,
        "representative_name": settings.REPORTS_REPRESENTATIVE,
        "dpo_name": settings.REPORTS_DPO,
        "security_measures": settings.REPORTS_SECURITY_MEASURES or SERVICE_OWN_MEASURES,
    }
    return {name: value for name, value in initial.items() if value}


class OrganisationProfileForm(ModelForm):
    # A web address typed without its scheme is taken as https (Django 6's default).
    supervisory_authority_website = forms.URLField(
        label=OrganisationProfile._meta.get_field("supervisory_authority_website").verbose_name,
        required=False, assume_scheme="https",
    )  # fmt: skip

    class Meta:
        model = OrganisationProfile
        fields = OrganisationProfile.EDITABLE


@admin.register(OrganisationProfile)
class OrganisationProfileAdmin(admin.ModelAdmin):
    form = OrganisationProfileForm
    list_display = ["__str__", "missing", "updated_at", "updated_by", "ledger_entry"]
    readonly_fields = ["missing", "last_change"]
    fieldsets = [
        (None, {"fields": ["missing", "last_change"]}),
        ("Controller (GDPR Art. 30(1)(a))", {"fields": [
            "controller_name", "controller_address", "controller_email", "controller_phone"]}),
        ("EU representative (Art. 27): name and contact, or why none is required", {"fields": [
            "representative_name", "representative_contact", "representative_not_required_reason"]}),
        ("Data protection officer (Art. 37): name and contact, or why none is designated", {"fields": [
            "dpo_name", "dpo_contact", "dpo_not_designated_reason"]}),
        ("Lead supervisory authority (Art. 56)", {"fields": [
            "supervisory_authority_name", "supervisory_authority_address", "supervisory_authority_website"]}),
        ("Security measures (Art. 32)", {"fields": ["security_measures"]}),
        ("CCPA consumer requests (optional)", {"fields": ["ccpa_request_email", "ccpa_request_phone"]}),
    ]  # fmt: skip

    def has_module_permission(self, request: HttpRequest) -> bool:
        return organisation_profile_may_read(user=request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return organisation_profile_may_read(user=request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # One row: added once, then changed.
        return is_platform_admin(request.user) and not OrganisationProfile.objects.exists()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_admin(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {**initial_from_settings(), **super().get_changeform_initial_data(request)}

    @admin.display(description="missing for the reports")
    def missing(self, profile: OrganisationProfile) -> str:
        lacking = profile.missing_for_reports()
        if not lacking:
            return "nothing: the reports have what they need"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((item,) for item in lacking)))

    @admin.display(description="ledger entry")
    def ledger_entry(self, profile: OrganisationProfile) -> str:
        if profile.ledger_index is None:
            return "-"
        url = reverse("admin:ledger_entry_change", args=[profile.ledger_index])
        return format_html('<a href="{}">#{}</a>', url, profile.ledger_index)

    @admin.display(description="last changed")
    def last_change(self, profile: OrganisationProfile) -> str:
        if profile.updated_at is None:
            return "never"
        when = f"{timezone.localtime(profile.updated_at):%Y-%m-%d %H:%M}"
        return format_html(
            "{} by {}, ledger entry {} (organisation.profile_updated)", when, profile.updated_by,
            self.ledger_entry(profile),
        )  # fmt: skip

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Through the service, never the default save: it checks the actor and writes the ledger."""
        fields = {name: form.cleaned_data[name] for name in OrganisationProfile.EDITABLE}
        before = OrganisationProfile.objects.filter(pk=1).values_list("ledger_index", flat=True).first()
        try:
            profile = organisation_profile_update(actor=request.user, **fields)
        except DomainError as exc:
            refusal(request, exc, object_type="governance.organisationprofile")
            setattr(request, _REFUSED, exc)
            messages.error(request, exc.message)
            return
        obj.pk = profile.pk
        setattr(request, _SAVED, (profile.ledger_index != before, profile))

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        # The ledger is the record of each change; the admin's own log would also claim a refused one.
        return None

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        return None

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        return self._refused_response(request) or self._saved_response(request)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        return self._refused_response(request) or self._saved_response(request)

    def _saved_response(self, request: HttpRequest) -> HttpResponse:
        """The true outcome, instead of the admin's "changed successfully": what was recorded (or
        that nothing changed), and whether the reports still lack something."""
        changed, profile = getattr(request, _SAVED)
        if changed:
            messages.success(request, f"The organisation profile was changed: ledger entry #{profile.ledger_index}.")
        else:
            messages.info(
                request, "Nothing changed: the profile already held these values; no ledger entry was written."
            )
        missing = profile.missing_for_reports()
        if missing:
            messages.warning(
                request, f'Reports stay marked "DRAFT - incomplete" until the profile has {", ".join(missing)}.'
            )
        return HttpResponseRedirect(reverse("admin:governance_organisationprofile_change", args=[profile.pk]))

    def _refused_response(self, request: HttpRequest) -> HttpResponse | None:
        """Back to the form, without the admin's "changed successfully", when the service refused."""
        if getattr(request, _REFUSED, None) is None:
            return None
        return HttpResponseRedirect(request.path)
