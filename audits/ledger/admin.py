"""Read-only admin pages of the ledger: entries, checkpoints, keys and verification results, and
each entry's inclusion proof (``/admin/ledger/entry/<index>/proof/``, URL name
``admin:ledger_entry_proof``) with its proof file for the offline verifier.

The entry pages (list, change page, proof page and file) show a reader only the entries they read,
as the API does (``entries_scoped``): another project's entry is no entry at all."""

from __future__ import annotations

import base64
import json
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, Value
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from audits.ledger.inclusion import entry_inclusion_proof
from audits.ledger.models import Checkpoint, Entry, PublishedKey, VerificationRun
from audits.ledger.selectors import entries_scoped, entry_decoded, tree_size
from common.admin import ReadOnlyAdmin

MAX_INDEX = 2**63 - 1  # indexes are 64-bit signed integers in the database


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = [
        "index", "created_at", "action", "actor_name", "subject_type", "subject_id", "request_id", "in_tree",
    ]  # fmt: skip
    list_filter = ["action", "subject_type"]
    search_fields = ["=index", "action", "actor_name", "subject_id", "request_id"]
    fields = ["index", "created_at", "action", "actor_name", "in_tree", "leaf_hash_b64", "inclusion_proof", "decoded"]
    readonly_fields = fields
    show_full_result_count = False  # a count(*) over millions of rows per page view is not free

    def get_queryset(self, request: HttpRequest) -> QuerySet[Entry]:
        # The tree's size, read once: under deferred sequencing the entries at or past it are
        # recorded and wait for the integrator (audits/ledger/integrator.py).
        queryset = super().get_queryset(request).annotate(tree_size=Value(tree_size()))
        return entries_scoped(queryset, request.user)

    @admin.display(description="in the tree")
    def in_tree(self, obj: Entry) -> str:
        if obj.index < getattr(obj, "tree_size", 0):
            return "yes"
        return "recorded, not yet integrated"

    def get_urls(self) -> list[URLPattern]:
        # Before the default URLs: their "<object_id>/" pattern would take "<index>/proof/" too.
        return [
            path("<int:index>/proof/", self.admin_site.admin_view(self.proof_view), name="ledger_entry_proof"),
            path(
                "<int:index>/proof/download/",
                self.admin_site.admin_view(self.proof_download_view),
                name="ledger_entry_proof_download",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="inclusion proof")
    def inclusion_proof(self, obj: Entry) -> str:
        href = reverse("admin:ledger_entry_proof", args=[obj.index])
        return format_html('<a href="{}">Inclusion proof of entry {}</a>', href, obj.index)

    def _entry_or_page(self, request: HttpRequest, index: int) -> Entry | TemplateResponse:
        """The entry, or a plain 404 page naming the index (never a 500 for a huge number)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        entry = self.get_queryset(request).filter(index=index).first() if index <= MAX_INDEX else None
        if entry is not None:
            return entry
        context = {**self.admin_site.each_context(request), "opts": self.opts, "index": index, "title": "No such entry"}
        return TemplateResponse(request, "admin/ledger/entry/proof_missing.html", context, status=404)

    def proof_view(self, request: HttpRequest, index: int) -> HttpResponse:
        entry = self._entry_or_page(request, index)
        if isinstance(entry, TemplateResponse):
            return entry
        proof = entry_inclusion_proof(entry)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Inclusion proof of ledger entry {entry.index}",
            "entry": entry,
            "leaf_hash_b64": base64.b64encode(bytes(entry.leaf_hash)).decode(),
            "proof": proof,
            "every_s": settings.LEDGER_CHECKPOINT_EVERY_S,
        }
        return TemplateResponse(request, "admin/ledger/entry/proof.html", context)

    def proof_download_view(self, request: HttpRequest, index: int) -> HttpResponse:
        entry = self._entry_or_page(request, index)
        if isinstance(entry, TemplateResponse):
            return entry
        proof = entry_inclusion_proof(entry)
        if not proof.covered:  # no file yet: the proof page says why and when
            return redirect("admin:ledger_entry_proof", index=entry.index)
        response = HttpResponse(proof.file_bytes(), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{proof.file_name()}"'
        return response

    @admin.display(description="leaf hash (base64)")
    def leaf_hash_b64(self, obj: Entry) -> str:
        return base64.b64encode(bytes(obj.leaf_hash)).decode()

    @admin.display(description="entry (sealed personal data stays sealed)")
    def decoded(self, obj: Entry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entry_decoded(obj)["entry"], indent=2, ensure_ascii=False))


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["id", "tree_size", "created_at", "root_b64"]
    fields = ["tree_size", "created_at", "root_b64", "signed_note"]
    readonly_fields = fields

    @admin.display(description="root (base64)")
    def root_b64(self, obj: Checkpoint) -> str:
        return base64.b64encode(bytes(obj.root)).decode()

    @admin.display(description="signed note")
    def signed_note(self, obj: Checkpoint) -> str:
        return format_html("<pre>{}</pre>", obj.note)


@admin.register(PublishedKey)
class PublishedKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "key_id", "first_used_at", "retired_at", "verifier"]


@admin.register(VerificationRun)
class VerificationRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "ok", "tree_size", "checkpoints_checked", "failure"]
    list_filter = ["ok"]
