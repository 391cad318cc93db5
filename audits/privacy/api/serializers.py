from __future__ import annotations

from rest_framework import serializers

from common.api import ReasonInputSerializer, id_field, ledgered_text


class IdentifierSerializer(serializers.Serializer):
    kind = serializers.CharField(max_length=32, help_text="email, phone, name (or EMAIL_ADDRESS, PHONE_NUMBER, PERSON)")
    value = serializers.CharField(max_length=500, trim_whitespace=False)


class RequestReceiveSerializer(serializers.Serializer):
    regime = serializers.CharField(max_length=8, help_text="gdpr or ccpa")
    kind = serializers.CharField(max_length=16, help_text="gdpr: access, erasure, rectification, objection; "
                                 "ccpa: know, delete, correct, opt_out, limit_sensitive")  # fmt: skip
    channel = serializers.CharField(max_length=16, help_text="email, web_form, phone, mail, in_person")
    received_at = serializers.CharField(max_length=64, help_text="ISO 8601 with its UTC offset")
    identifiers = IdentifierSerializer(many=True)
    tz = serializers.CharField(max_length=64, required=False, default="UTC")


class MethodSerializer(serializers.Serializer):
    method = serializers.CharField(max_length=200)


class DenySerializer(serializers.Serializer):
    basis = ledgered_text()
    nature = serializers.CharField(max_length=2000, required=False, default="")


class CompleteSerializer(serializers.Serializer):
    nature = serializers.CharField(max_length=2000)


class LegalHoldPlaceSerializer(ReasonInputSerializer):
    identifiers = IdentifierSerializer(many=True, required=False, default=list)
    request = id_field(required=False, allow_null=True, default=None)


class ModelReviewCloseSerializer(serializers.Serializer):
    outcome = serializers.CharField(max_length=16, help_text="retrained, kept or retired")
    note = ledgered_text(max_length=4000)


class RequestSerializer(serializers.Serializer):
    """A request as its officers see it: keyed hashes of the identifiers, never the identifiers."""

    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    regime = serializers.CharField()
    kind = serializers.CharField()
    channel = serializers.CharField()
    state = serializers.CharField()
    received_at = serializers.DateTimeField()
    tz = serializers.CharField()
    identifier_hashes = serializers.JSONField()
    confirm_by = serializers.DateTimeField(allow_null=True)
    respond_by = serializers.DateTimeField()
    extension_notice_by = serializers.DateTimeField(allow_null=True)
    extended = serializers.BooleanField()
    extension_reason = serializers.CharField()
    receipt_confirmed_at = serializers.DateTimeField(allow_null=True)
    deadline_flag = serializers.CharField()
    verified_at = serializers.DateTimeField(allow_null=True)
    verification_method = serializers.CharField()
    searched_at = serializers.DateTimeField(allow_null=True)
    package_sha256 = serializers.CharField()
    letter_sha256 = serializers.CharField(help_text="of the last signed letter (PDF) issued; empty: none")
    erased_at = serializers.DateTimeField(allow_null=True)
    responded_at = serializers.DateTimeField(allow_null=True)
    response_nature = serializers.CharField()
    denial_basis = serializers.CharField()


class RequestDetailSerializer(RequestSerializer):
    findings = serializers.JSONField()
    erasure = serializers.JSONField()


class AccessPackageSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    package = serializers.JSONField()


class RequestLogRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    regime = serializers.CharField()
    request_date = serializers.DateTimeField()
    nature = serializers.CharField()
    nature_display = serializers.CharField()
    manner = serializers.CharField()
    state = serializers.CharField()
    response_date = serializers.DateTimeField(allow_null=True)
    response_nature = serializers.CharField()
    denial_basis = serializers.CharField()
    respond_by = serializers.DateTimeField()
    extended = serializers.BooleanField()


class LegalHoldSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    scope = serializers.SerializerMethodField()
    identifier_hashes = serializers.JSONField()
    reason = serializers.CharField()
    placed_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)
    release_reason = serializers.CharField()

    def get_scope(self, hold: object) -> str:
        return "person" if getattr(hold, "identifier_hashes", None) else "project"


class ModelReviewSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    model_version = serializers.IntegerField(source="model_version_id")
    request = serializers.IntegerField(source="request_id")
    dataset_versions = serializers.JSONField()
    opened_at = serializers.DateTimeField()
    outcome = serializers.CharField()
    note = serializers.CharField()
    closed_at = serializers.DateTimeField(allow_null=True)
