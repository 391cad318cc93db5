"""Second-factor locks: the accounts whose second factor is locked after ``MFA_LOCKOUT_FAILURES``
wrong codes in a row (governance/mfa.py), and the page that lifts a lock with a reason
(``staff_mfa_unlock``, which checks who may and writes the ledger). Open to global admins and to
platform admins, each seeing the accounts they manage (``accounts_managed``): the people and
service accounts working in their projects."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from common.api import LEDGERED_TEXT_HELP
from common.errors import DomainError
from common.security_log import refusal
from governance.mfa import staff_mfa_unlock
from governance.models import SecondFactorLock
from governance.permissions import is_platform_admin
from governance.roles import Role
from governance.selectors import accounts_managed, project_list


class UnlockForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "autofocus": True}),
        help_text="Why the lock may be lifted (who offered the codes; whether the password was changed). "
        + LEDGERED_TEXT_HELP,
        error_messages={
            "required": "Say why the lock may be lifted.",
            "max_length": "At most %(limit_value)d characters.",
        },
    )


def _administers_accounts(request: HttpRequest) -> bool:
    user = request.user
    if not (user.is_authenticated and user.is_active):
        return False
    return is_platform_admin(user) or project_list(user=user, roles=[Role.PLATFORM_ADMIN]).exists()


@admin.register(SecondFactorLock)
class SecondFactorLockAdmin(ReadOnlyAdmin):
    list_display = ["user", "state", "failures", "locked", "unlock_link"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    fields = ["user", "state", "failures", "locked_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The locks of the accounts the viewer manages, locked ones first; never their own.
        managed = accounts_managed(user=request.user).exclude(pk=request.user.pk)
        newest_lock_first = F("locked_at").desc(nulls_last=True)
        locks = SecondFactorLock.objects.filter(user__in=managed).select_related("user")
        return locks.order_by(newest_lock_first, "pk")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _administers_accounts(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _administers_accounts(request)

    def get_urls(self) -> list[Any]:
        unlock = path(
            "<path:object_id>/unlock/",
            self.admin_site.admin_view(self.unlock_view),
            name="governance_secondfactorlock_unlock",
        )
        return [unlock, *super().get_urls()]

    @admin.display(description="state")
    def state(self, lock: SecondFactorLock) -> str:
        return "locked" if lock.locked_at else "open"

    @admin.display(description="locked", ordering="locked_at")
    def locked(self, lock: SecondFactorLock) -> str:
        return f"{lock.locked_at:%Y-%m-%d %H:%M}" if lock.locked_at else "-"

    @admin.display(description="")
    def unlock_link(self, lock: SecondFactorLock) -> str:
        if lock.locked_at is None:
            return ""
        url = reverse("admin:governance_secondfactorlock_unlock", args=[lock.pk])
        return format_html('<a href="{}" class="unlock-link">Unlock…</a>', url)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Second-factor locks", **(extra_context or {})})

    def unlock_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        lock = self.get_object(request, object_id) if self.has_view_permission(request) else None
        if lock is None:
            raise Http404("no such second-factor lock among the accounts you manage")
        changelist = reverse("admin:governance_secondfactorlock_changelist")
        username = lock.user.get_username()
        if lock.locked_at is None:
            messages.info(request, f"The second factor of {username} is not locked.")
            return HttpResponseRedirect(changelist)
        form = UnlockForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                unlocked = staff_mfa_unlock(actor=request.user, user=lock.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                refusal(request, exc, second_factor_of=lock.user_id)
                form.add_error("reason" if "reason" in exc.fields else None, exc.message)
            else:
                if unlocked:
                    messages.success(request, f"Unlocked the second factor of {username}: it takes codes again.")
                else:
                    messages.info(request, f"The second factor of {username} was already unlocked.")
                return HttpResponseRedirect(changelist)
        title = f"Unlock the second factor of {username}?"
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": title}
        context |= {"lock": lock, "form": form}
        return TemplateResponse(request, "admin/governance/secondfactorlock/unlock.html", context)
