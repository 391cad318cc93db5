"""The admin's second factor: a password, then a TOTP code (django-otp).

Sign-in goes through three pages of the admin site:

1. ``/admin/login/``: username and password (django-axes counts the failures). A staff user who
   passes is logged in but not *verified*, and no admin page, nor the API by session
   (governance/authentication.py), lets an unverified session in.
2. ``/admin/mfa/verify/``: a code from the user's authenticator app, or one of the backup codes.
   django-otp refuses a code used before and slows down repeated failures (throttling), and
   ``MFA_LOCKOUT_FAILURES`` wrong codes in a row lock the account (``SecondFactorLock``): no code
   is taken for it, the right one included, until a platform admin lifts the lock
   (``staff_mfa_unlock``, in the admin). Whoever offers those codes already holds the password.
3. ``/admin/mfa/enrol/``, instead of 2 for a staff user with no authenticator yet: the page shows
   the TOTP secret (as a QR code, an ``otpauth://`` URI and in base32); the first valid code
   confirms it, and the page shows the backup codes once. This is part of the first sign-in.

Caveat (trust on first use): until a user enrols, whoever holds their password can enrol instead
of them. New staff should sign in soon after being given their password; a lost authenticator is
reset with ``manage.py mfa_reset USERNAME``, after which the next sign-in enrols again.

Single sign-on (governance/oidc.py, when configured) replaces step 1: the identity provider's
sign-in opens the same kind of unverified session, and steps 2 and 3 follow as after a password,
unless the provider asserted a second factor in the ID token (``IdentityProviderMfaMiddleware``).
"""

from __future__ import annotations

from base64 import b32encode
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, auth
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.decorators import method_decorator
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audits.ledger.services import Subject, ledger_append
from common.errors import DomainError
from common.security_log import mfa_attempt, security_event
from governance.models import SecondFactorLock


def user_is_verified(user: Any) -> bool:
    """Whether this request's user passed the second factor (OTPMiddleware installs ``is_verified``)."""
    is_verified = getattr(user, "is_verified", None)
    return bool(is_verified is not None and is_verified())


def _password_only(user: Any) -> bool:
    """Signed in by the first step (a password, or single sign-on) but not yet verified."""
    return bool(user.is_authenticated and user.is_active and user.is_staff and not user_is_verified(user))


# --- A second factor the identity provider asserted (single sign-on) ------------------------------

IDP_MFA_SESSION_KEY = "governance_idp_mfa"


class IdentityProviderMfaMiddleware:
    """Counts a session as verified when its single sign-on carried the identity provider's
    assertion of a second factor (governance/oidc.py writes ``IDP_MFA_SESSION_KEY`` after login).

    Why a session flag and not django-otp's login with a device: django-otp's verified state is the
    id of a confirmed device of the user, kept in the session. A device standing for "the provider
    did it" would be a new model, and would count as the user's authenticator everywhere
    (``user_has_device``): their next password sign-in would go to a verify page no code can pass
    instead of enrolling an authenticator. The flag lives in the session, which ``auth.login``
    flushes when another user signs in and logout ends, and names the user it was given to. It
    makes ``user.is_verified()`` true, which is what the admin (``user_is_verified``) and the API's
    session authentication ask, and leaves ``user.otp_device`` empty: no device verified anything.

    Installed right after OTPMiddleware. Synchronous only: async code reading ``request.auser()``
    sees django-otp's answer alone (unverified after single sign-on), the safe side.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None:
            request.user = SimpleLazyObject(partial(_honour_idp_mfa, request, user))
        return self.get_response(request)


def _honour_idp_mfa(request: HttpRequest, user: Any) -> Any:
    if user.is_authenticated and not user_is_verified(user):
        asserted = request.session.get(IDP_MFA_SESSION_KEY)
        if isinstance(asserted, dict) and asserted.get("user") == str(user.pk):
            user.is_verified = _asserted_by_identity_provider
    return user


def _asserted_by_identity_provider() -> bool:
    return True


def axes_counts_passwords_only(request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
    """``AXES_WHITELIST_CALLABLE``: django-axes counts and locks out failed *passwords*. A sign-in
    without one (the single sign-on callback: the provider judged the credentials, under its own
    lockout) is left alone; otherwise five refused sign-ins from one address would lock every
    single sign-on from it, and axes would store the callback's query (an authorization code)."""
    return not (credentials or {}).get("password")


# --- Services ------------------------------------------------------------------------------------


def staff_totp_enrolment_start(*, user: AbstractBaseUser) -> TOTPDevice:
    """The user's authenticator awaiting confirmation, made on the first call: the enrolment page
    shows the same secret on every visit until a code confirms it."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    return device


def staff_totp_enrolment_confirm(*, user: AbstractBaseUser, device: TOTPDevice, token: str) -> list[str] | None:
    """Confirm ``device`` with a code from it. Returns the new backup codes (to show once), or
    ``None`` when the code is wrong. Writes ``mfa.enrolled`` to the ledger."""
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk, user=user, confirmed=False)
        if not device.verify_token(token):
            return None
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        StaticDevice.objects.filter(user=user).delete()
        codes = [StaticToken.random_token() for _ in range(settings.MFA_BACKUP_CODES)]
        if codes:
            backup = StaticDevice.objects.create(user=user, name="backup codes", confirmed=True)
            StaticToken.objects.bulk_create(StaticToken(device=backup, token=code) for code in codes)
        ledger_append(
            actor=user,
            action="mfa.enrolled",
            subject=Subject("user", str(user.pk)),
            payload={"device": "totp", "backup_codes": len(codes)},
        )
    return codes


def _end_sessions(user: AbstractBaseUser) -> int:
    """Sign ``user`` out everywhere: delete their unexpired sessions. Returns how many."""
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    ended = [
        s.pk
        for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if s.get_decoded().get(auth.SESSION_KEY) == str(user.pk)
    ]
    Session.objects.filter(pk__in=ended).delete()
    return len(ended)


def staff_mfa_reset(*, actor: AbstractBaseUser, user: AbstractBaseUser, reason: str) -> int:
    """Remove every second-factor device of ``user`` (a lost phone) and end their sessions, so
    that whoever holds one cannot enrol an authenticator of their own with it: their next sign-in,
    password first, enrols a new one. Returns how many devices were removed. Writes ``mfa.reset``
    to the ledger."""
    from governance.permissions import is_platform_admin

    if not is_platform_admin(actor):
        raise DomainError("permission_denied", "only a platform admin may reset a second factor", status_code=403)
    if not reason.strip():
        raise DomainError("invalid_input", "a reset needs a reason", fields={"reason": ["may not be blank"]})
    with transaction.atomic():
        removed = TOTPDevice.objects.filter(user=user).delete()[1].get("otp_totp.TOTPDevice", 0)
        removed += StaticDevice.objects.filter(user=user).delete()[1].get("otp_static.StaticDevice", 0)
        sessions = _end_sessions(user)
        ledger_append(
            actor=actor,
            action="mfa.reset",
            subject=Subject("user", str(user.pk)),
            payload={"devices_removed": removed, "sessions_ended": sessions, "reason": reason.strip()},
        )
    return removed


# --- Lockout after wrong codes -------------------------------------------------------------------


def staff_mfa_locked(user: AbstractBaseUser) -> bool:
    """Whether ``user``'s second factor is locked (``MFA_LOCKOUT_FAILURES`` wrong codes in a row)."""
    return SecondFactorLock.objects.filter(user_id=user.pk, locked_at__isnull=False).exists()


def staff_mfa_failure_record(*, user: AbstractBaseUser) -> SecondFactorLock:
    """Count one wrong code offered for ``user``; the one that reaches ``MFA_LOCKOUT_FAILURES`` in
    a row locks the account and writes ``mfa.locked_out`` to the ledger (by the ``system``
    account: the one who typed the codes is not known, only that they held the password).
    Returns the account's lock row as it now is."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from governance.permissions import SYSTEM_USERNAME

    with transaction.atomic():
        SecondFactorLock.objects.get_or_create(user_id=user.pk)
        lock = SecondFactorLock.objects.select_for_update().get(user_id=user.pk)
        if lock.locked_at is not None:
            return lock
        lock.failures += 1
        if lock.failures >= settings.MFA_LOCKOUT_FAILURES:
            lock.locked_at = timezone.now()
            ledger_append(
                actor=get_user_model().objects.get(username=SYSTEM_USERNAME),
                action="mfa.locked_out",
                subject=Subject("user", str(user.pk)),
                payload={"username": user.get_username(), "failures": lock.failures},
            )
        lock.save(update_fields=["failures", "locked_at"])
    return lock


def staff_mfa_success_record(*, user: AbstractBaseUser) -> None:
    """A right code: the count of wrong codes in a row starts again (a lock stays: it is checked
    before any code is taken)."""
    SecondFactorLock.objects.filter(user_id=user.pk, locked_at__isnull=True, failures__gt=0).update(failures=0)


def staff_mfa_unlock(*, actor: AbstractBaseUser, user: AbstractBaseUser, reason: str) -> bool:
    """Lift the lock on ``user``'s second factor: the next sign-in takes codes again, counted from
    0. Returns ``True`` if this call lifted a lock (``mfa.unlocked`` in the ledger, with the
    reason), ``False`` if there was none. A global admin, or a platform admin of a project where
    ``user`` holds a role (``accounts_managed``); never one's own lock.

    Caveat: the lock means someone holding the password offered wrong codes; before lifting it,
    make sure the password is changed if the account's owner did not offer them."""
    from django.utils import timezone

    from common.errors import PermissionDenied
    from governance.permissions import is_platform_admin
    from governance.selectors import accounts_managed

    if actor.pk == user.pk:
        raise PermissionDenied("permission_denied", "a second-factor lock is lifted by another administrator")
    if not (is_platform_admin(actor) or accounts_managed(user=actor).filter(pk=user.pk).exists()):
        raise PermissionDenied(
            "permission_denied",
            f"only a platform admin of a project {user.get_username()} works in, or a global admin, may lift "
            "their second-factor lock",
        )
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise DomainError("invalid_input", "lifting a lock needs a reason", fields={"reason": ["may not be blank"]})
    with transaction.atomic():
        lock = SecondFactorLock.objects.select_for_update().filter(user_id=user.pk).first()
        if lock is None or lock.locked_at is None:
            return False
        failures, locked_at = lock.failures, lock.locked_at
        lock.failures, lock.locked_at = 0, None
        lock.save(update_fields=["failures", "locked_at"])
        ledger_append(
            actor=actor,
            action="mfa.unlocked",
            subject=Subject("user", str(user.pk)),
            payload={
                "username": user.get_username(), "failures": failures,
                "locked_at": locked_at.isoformat(), "since_locked_s": int((timezone.now() - locked_at).total_seconds()),
                "reason": reason,
            },
        )  # fmt: skip
    return True


# --- The admin site ------------------------------------------------------------------------------


class CodeForm(forms.Form):
    token = forms.CharField(
        label="Code",
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"}),
    )

    def clean_token(self) -> str:
        return "".join(self.cleaned_data["token"].split()).lower()


def _qr_svg(uri: str) -> str:
    import segno

    return str(segno.make(uri, error="m").svg_inline(scale=5, border=2))


class MfaAdminSite(admin.AdminSite):
    """The admin site: staff need a password and a verified second factor for every page."""

    site_header = "LLMOps governance"
    site_title = "LLMOps governance"
    index_title = "Approvals, inventory and the ledger"
    # No public site stands behind the admin ("/" answers 404): no "View site" link.
    site_url = None
    # No navigation sidebar: at 1280 px it took 290 px from every list, which then pushed its key
    # columns off-screen beside the filters. The home page lists every page a person may open.
    enable_nav_sidebar = False
    # The stock login page, plus "Sign in with <provider>" when single sign-on is configured.
    login_template = "admin/login_with_sso.html"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and user_is_verified(request.user)

    def get_urls(self) -> list[URLPattern | URLResolver]:
        return [
            path("mfa/verify/", self._password_stage(self.mfa_verify_view), name="mfa_verify"),
            path("mfa/enrol/", self._password_stage(self.mfa_enrol_view), name="mfa_enrol"),
            path("mfa/sign-out/", self._password_stage(require_POST(self.mfa_sign_out_view)), name="mfa_sign_out"),
            *super().get_urls(),
        ]

    @method_decorator(never_cache)
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method == "GET" and _password_only(request.user):
            return self._to_second_factor(request)
        # Always in the context, empty when single sign-on is off: a variable the template cannot
        # resolve makes Django log the whole context at DEBUG, the typed username included.
        sso = {"sso_name": "", "sso_url": ""}
        if settings.OIDC_ENABLED:
            query = urlencode({"next": self._next(request)})
            sso = {"sso_name": settings.OIDC_PROVIDER_NAME, "sso_url": f"{reverse('oidc_authentication_init')}?{query}"}
        extra_context = {**(extra_context or {}), **sso}
        response = super().login(request, extra_context)
        if request.method == "POST" and response.status_code == 302 and _password_only(request.user):
            return self._to_second_factor(request)
        return response

    # Views for a session that has passed the first step only (password or single sign-on).

    def _password_stage(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not (user.is_authenticated and user.is_active and user.is_staff):
                return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=self.name))
            return view(request, *args, **kwargs)

        return never_cache(csrf_protect(inner))

    def _next(self, request: HttpRequest) -> str:
        target = request.POST.get("next") or request.GET.get("next") or ""
        if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return target
        return reverse("admin:index", current_app=self.name)

    def _to_second_factor(self, request: HttpRequest) -> HttpResponse:
        query = urlencode({"next": self._next(request)})
        return HttpResponseRedirect(f"{reverse('admin:mfa_verify', current_app=self.name)}?{query}")

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            **self.each_context(request),
            "is_nav_sidebar_enabled": False,
            "available_apps": [],
            "next": self._next(request),
            "sign_out_url": reverse("admin:mfa_sign_out", current_app=self.name),
            **extra,
        }

    def mfa_verify_view(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user_is_verified(user):
            return HttpResponseRedirect(self._next(request))
        if not user_has_device(user):
            query = urlencode({"next": self._next(request)})
            return HttpResponseRedirect(f"{reverse('admin:mfa_enrol', current_app=self.name)}?{query}")
        if staff_mfa_locked(user):
            return self._locked(request, step="verify")
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            device = match_token(user, form.cleaned_data["token"])
            mfa_attempt(request, user, succeeded=device is not None, step="verify")
            if device is not None:
                staff_mfa_success_record(user=user)
                otp_login(request, device)
                request.session.cycle_key()
                return HttpResponseRedirect(self._next(request))
            lock = staff_mfa_failure_record(user=user)
            if lock.locked_at is not None:
                return self._locked(request, step="verify")
            left = settings.MFA_LOCKOUT_FAILURES - lock.failures
            form.add_error(
                "token",
                "That code is not valid. Try the next code (after several tries, wait a little). "
                f"{left} more wrong code{'s' if left != 1 else ''} in a row will lock this account until an "
                "administrator unlocks it.",
            )
        context = self._context(request, title="Second factor", form=form)
        return TemplateResponse(request, "admin/mfa/verify.html", context)

    def mfa_enrol_view(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user_is_verified(user):
            return HttpResponseRedirect(self._next(request))
        if user_has_device(user):
            query = urlencode({"next": self._next(request)})
            return HttpResponseRedirect(f"{reverse('admin:mfa_verify', current_app=self.name)}?{query}")
        if staff_mfa_locked(user):
            return self._locked(request, step="enrol")
        device = staff_totp_enrolment_start(user=user)
        form = CodeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            codes = staff_totp_enrolment_confirm(user=user, device=device, token=form.cleaned_data["token"])
            mfa_attempt(request, user, succeeded=codes is not None, step="enrol")
            if codes is not None:
                device.refresh_from_db()
                otp_login(request, device)
                request.session.cycle_key()
                context = self._context(request, title="Authenticator enrolled", backup_codes=codes, sign_out_url=None)
                return TemplateResponse(request, "admin/mfa/enrolled.html", context)
            form.add_error("token", "That code is not valid: check the app shows this account, and the clock.")
        secret = b32encode(device.bin_key).decode()
        context = self._context(
            request,
            title="Set up your authenticator",
            form=form,
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            otpauth_uri=device.config_url,
            qr_svg=_qr_svg(device.config_url),
        )
        return TemplateResponse(request, "admin/mfa/enrol.html", context)

    def _locked(self, request: HttpRequest, *, step: str) -> HttpResponse:
        """The page of a locked second factor (403): it takes no code, and says who lifts the lock."""
        security_event(
            "auth.mfa.failed", outcome="failure", reason="locked_out", request=request, user=request.user,
            auth_method="totp", step=step,
        )  # fmt: skip
        context = self._context(request, title="Sign-in locked", failure_limit=settings.MFA_LOCKOUT_FAILURES)
        return TemplateResponse(request, "admin/mfa/second_factor_locked.html", context, status=403)

    def mfa_sign_out_view(self, request: HttpRequest) -> HttpResponse:
        auth.logout(request)
        return HttpResponseRedirect(reverse("admin:login", current_app=self.name))
