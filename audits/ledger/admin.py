"""Read-only admin pages of the ledger: entries, checkpoints, keys and verification results."""

from __future__ import annotations

import base64
import json

from django.contrib import admin
from django.utils.html import format_html

from audits.ledger.models import Checkpoint, Entry, PublishedKey, VerificationRun
from audits.ledger.selectors import entry_decoded
from common.admin import ReadOnlyAdmin


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["index", "created_at", "action", "actor_name", "subject_type", "subject_id", "request_id"]
    list_filter = ["action", "subject_type"]
    search_fields = ["=index", "action", "actor_name", "subject_id", "request_id"]
    fields = ["index", "created_at", "action", "actor_name", "leaf_hash_b64", "decoded"]
    readonly_fields = fields
    show_full_result_count = False  # a count(*) over millions of rows per page view is not free

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
