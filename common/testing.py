"""Helpers for tests of this project (imported by tests only)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.test import Client
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice


def admin_login(client: Client, user: Any) -> TOTPDevice:
    """Sign ``user`` in on ``client`` as after the whole admin sign-in: password and second factor.

    The password step is ``force_login`` (as before MFA); the second factor is django-otp's own
    ``login`` with a confirmed TOTP device of the user (made if missing), which is what the verify
    page does after a right code. The sign-in pages themselves, codes and all, are tested in
    governance/tests/test_mfa.py. Returns the device."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)
    client.force_login(user)
    session = client.session
    request = HttpRequest()
    request.session = session
    request.user = user
    otp_login(request, device)
    session.save()
    return device
