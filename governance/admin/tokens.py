"""API tokens: every person who works in the admin lists their own tokens (with those of the
accounts they manage: ``api_token_list``), adds one for themselves or for a service account they
manage (shown once) and revokes one after a confirmation; a project's platform admins see and
revoke the tokens of the people and service accounts working in it, so a leaked one is revoked
at once. Each change goes through the services of governance/services/accounts.py, as the API's
do, which check the rules and write the ledger."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin, call_service_for_each
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal
from governance.models import ApiToken
from governance.selectors import api_token_list, service_accounts_managed
from governance.services import (
    api_token_create_for_service_account,
    api_token_create_own,
    api_token_may_revoke,
    api_token_revoke,
)

TEMPLATES = "admin/governance/apitoken"
REASON_MAX_LENGTH = 2000  # as the API's ledgered text
DEFAULT_DAYS = 90


YOURSELF = ""


class TokenForm(forms.Form):
    holder = forms.ChoiceField(
        label="For", required=False,
        help_text="Yourself, or a service account you manage (you own it, or it works in a project you are "
        "platform admin of).",
    )  # fmt: skip
    name = forms.CharField(
        max_length=ApiToken._meta.get_field("name").max_length,
        help_text="What the token is for (a laptop, a notebook, a CI job). " + LEDGERED_TEXT_HELP,
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "e.g. laptop", "autofocus": True}),
        error_messages={"required": "Give the token a name.", "max_length": "At most %(limit_value)d characters."},
    )

    def __init__(self, *args: Any, accounts: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if accounts:  # ``accounts``: (username, label) of the service accounts the person manages
            self.fields["holder"].choices = [(YOURSELF, "yourself"), *accounts]
        else:
            del self.fields["holder"]
        longest = settings.API_TOKEN_MAX_DAYS  # read now: the setting may change under tests
        self.fields["expires_in_days"] = forms.IntegerField(
            label="Expires in (days)", initial=DEFAULT_DAYS, min_value=1, max_value=longest,
            help_text=f"Every token expires: 1 to {longest} days (API_TOKEN_MAX_DAYS).",
            widget=forms.NumberInput(attrs={"size": 6}),
            error_messages={
                "required": "Say in how many days the token expires.",
                "invalid": "Enter a whole number of days, such as 30.",
                "min_value": "At least 1 day.",
                "max_value": f"At most {longest} days (API_TOKEN_MAX_DAYS).",
            },
        )  # fmt: skip


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "live"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> QuerySet[ApiToken]:
        now, unrevoked = timezone.now(), Q(revoked_at__isnull=True)
        match self.value():
            case "live":
                return queryset.filter(unrevoked & (Q(expires_at__isnull=True) | Q(expires_at__gt=now)))
            case "expired":
                return queryset.filter(unrevoked & Q(expires_at__lte=now))
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    # Short dates and no creation time (on the token's page): the list fits beside the filter at 1280 px.
    list_display = ["name", "user", "prefix", "state_shown", "expires", "last_used", "revoke_link"]
    list_display_links = ["name"]
    list_select_related = ["user"]
    list_filter = [StateFilter]
    search_fields = ["name", "prefix", "user__username"]
    fields = ["name", "user", "prefix", "state_shown", "created_at", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The user's own tokens and those of the service accounts they manage (anyone's for a
        # global admin): the ones they may revoke.
        return api_token_list(user=request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Anyone who may open the page adds tokens for themselves; the service holds the rules.
        return self.has_view_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Actions need change permission on the list; a token's page stays read-only.
        return obj is None and self.has_view_permission(request)

    def get_list_display(self, request: HttpRequest) -> list[str]:
        # Whose token goes without saying when a person sees only their own.
        if api_token_list(user=request.user).exclude(user=request.user).exists():
            return list(self.list_display)
        return [name for name in self.list_display if name != "user"]

    def get_urls(self) -> list[Any]:
        revoke = path(
            "<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name="governance_apitoken_revoke"
        )
        return [revoke, *super().get_urls()]

    @admin.display(description="state")
    def state_shown(self, token: ApiToken) -> str:
        return format_html('<span class="token-state token-{}">{}</span>', token.state, token.state)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, token: ApiToken) -> str:
        return f"{token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else "never"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, token: ApiToken) -> str:
        return f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "-"

    @admin.display(description="")
    def revoke_link(self, token: ApiToken) -> str:
        if token.state == "revoked":
            return format_html("revoked {}", f"{token.revoked_at:%Y-%m-%d %H:%M}")
        url = reverse("admin:governance_apitoken_revoke", args=[token.pk])
        return format_html('<a href="{}" class="revoke-link" aria-label="Revoke {}">Revoke…</a>', url, token.name)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "API tokens", **(extra_context or {})})

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise DjangoPermissionDenied
        managed = {
            account.user.get_username(): account.user
            for account in service_accounts_managed(user=request.user).select_related("user").order_by("user__username")
        }
        accounts = [(username, f"service account {username}") for username in managed]
        form = TokenForm(request.POST if request.method == "POST" else None, accounts=accounts)
        if request.method == "POST" and form.is_valid():
            holder, name = form.cleaned_data.get("holder") or YOURSELF, form.cleaned_data["name"]
            days = form.cleaned_data["expires_in_days"]
            try:
                if holder == YOURSELF:
                    row, token = api_token_create_own(actor=request.user, name=name, expires_in_days=days)
                else:
                    row, token = api_token_create_for_service_account(
                        actor=request.user, account=managed[holder], name=name, expires_in_days=days
                    )
            except DomainError as exc:
                refusal(request, exc)
                for field, problems in exc.fields.items():
                    form.add_error(field if field in form.fields else None, problems)
                if not exc.fields:
                    form.add_error(None, exc.message)
            else:
                # Answered here, never stored or redirected to: the token exists in this page alone
                # (the admin's views are never cached).
                title = "Your new API token" if row.user_id == request.user.pk else f"New API token of {holder}"
                context = {**self._context(request, title), "token": token, "row": row}
                return TemplateResponse(request, f"{TEMPLATES}/created.html", context)
        context = {**self._context(request, "Add an API token"), "form": form}
        return TemplateResponse(request, f"{TEMPLATES}/add.html", context)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        token = self.get_object(request, object_id)
        if token is None:
            raise Http404("no such API token among yours")
        changelist = reverse("admin:governance_apitoken_changelist")
        if token.state == "revoked":
            messages.info(request, f"Token {token.name!r} ({token.prefix}…) was already revoked.")
            return HttpResponseRedirect(changelist)
        if request.method == "POST":
            try:
                reason = request.POST.get("reason", "")[: REASON_MAX_LENGTH + 1]
                if len(reason.strip()) > REASON_MAX_LENGTH:
                    raise DomainError("invalid_input", f"a reason is at most {REASON_MAX_LENGTH} characters")
                revoked = api_token_revoke(actor=request.user, token=token, reason=reason)
            except DomainError as exc:
                refusal(request, exc, api_token=token.prefix)
                messages.error(request, f"{token.prefix}: {exc.message}")
            else:
                if revoked:
                    messages.success(request, f"Revoked token {token.name!r} ({token.prefix}…): it no longer works.")
                else:
                    messages.info(request, f"Token {token.name!r} ({token.prefix}…) was already revoked.")
            return HttpResponseRedirect(changelist)
        context = {
            **self._context(request, "Revoke this API token?"),
            "token": token, "own": token.user_id == request.user.pk,
            "may_revoke": api_token_may_revoke(request.user, token), "ledgered_text_help": LEDGERED_TEXT_HELP,
        }  # fmt: skip
        return TemplateResponse(request, f"{TEMPLATES}/revoke_confirmation.html", context)

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title}

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> HttpResponse | None:
        if request.POST.get("post") != "yes":  # first a page that names them and asks to confirm
            context = {
                **self._context(request, "Revoke these API tokens?"), "tokens": list(queryset),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }  # fmt: skip
            return TemplateResponse(request, f"{TEMPLATES}/revoke_selected_confirmation.html", context)
        call_service_for_each(
            request, queryset, lambda token: api_token_revoke(actor=request.user, token=token),
            name=lambda token: token.prefix, refusal_fields=lambda token: {"api_token": token.prefix},
            outcome=lambda revoked: "revoked" if revoked else "already_revoked",
            counted={"revoked": "Revoked {count} token(s)."},
            nothing="No token revoked: each selected token was already revoked.",
        )  # fmt: skip
        return None
