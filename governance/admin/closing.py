"""Closing reviews with an outcome, shared by the admin's review pages (break-glass reviews here,
the model reviews an erasure opens in audits.privacy): the selected reviews are listed on a
confirmation page that asks for the outcome and a note, then each is closed through its app's
service, and the message names each one closed or refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib.admin import ModelAdmin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from common.admin import DONE, call_service_for_each

TEMPLATE = "admin/close_with_outcome.html"


def close_with_outcome(
    model_admin: ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    form_class: type[forms.Form],
    describe: Callable[[Any], str],
    close: Callable[[Any, dict[str, Any]], Any],
    intro: str,
) -> HttpResponse | None:
    """The body of a "close the selected reviews" admin action. ``form_class`` has an ``outcome``
    field; ``describe`` says which review each row is; ``close(review, data)`` calls the service."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if not form.is_valid():
        reviews: list[Model] = list(queryset)
        opts = model_admin.model._meta
        context = {
            **model_admin.admin_site.each_context(request), "opts": opts, "form": form, "intro": intro,
            "title": f"Close {len(reviews)} {opts.verbose_name}(s)",
            "reviews": [(review.pk, describe(review)) for review in reviews],
            "action": request.POST.get("action", ""),
        }  # fmt: skip
        return TemplateResponse(request, TEMPLATE, context)
    data = form.cleaned_data
    call_service_for_each(
        request, queryset, lambda review: close(review, data), each={DONE: f"closed as {data['outcome']}"}
    )
    return None
