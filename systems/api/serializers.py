from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.api import ledgered_text


class AISystemCreateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100, help_text="the system's name in its project (a slug)")
    name = serializers.CharField(max_length=200)
    purpose = serializers.CharField(max_length=4000, help_text="the intended purpose (Art. 3(12))")
    description = serializers.CharField(
        max_length=20000, required=False, default="", allow_blank=True,
        help_text="what it is and how it works (Annex IV point 1); required before a high-risk system is deployed",
    )  # fmt: skip
    human_oversight = serializers.CharField(
        max_length=20000, required=False, default="", allow_blank=True,
        help_text="how people oversee it and who may stop it (Art. 14); required before a high-risk deployment",
    )  # fmt: skip
    deployers = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list, max_length=50,
        help_text="who uses the system under their authority (Art. 26)",
    )  # fmt: skip
    owner = serializers.CharField(
        max_length=150, required=False, help_text="the owner's username (a member of the project); default: you"
    )


class AISystemUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    purpose = serializers.CharField(max_length=4000, required=False)
    description = serializers.CharField(max_length=20000, required=False, allow_blank=True)
    human_oversight = serializers.CharField(max_length=20000, required=False, allow_blank=True)
    deployers = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
    owner = serializers.CharField(max_length=150, required=False, help_text="the owner's username")


class RequestStateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()


class ClassificationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    system = serializers.IntegerField(source="system_id")
    number = serializers.IntegerField()
    answers = serializers.JSONField()
    risk_class = serializers.CharField()
    reasons = serializers.JSONField()
    state = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    approval_request = serializers.SerializerMethodField(
        help_text="the latest approval request about it (id and state), if any"
    )

    @extend_schema_field(RequestStateSerializer(allow_null=True))
    def get_approval_request(self, classification: Any) -> dict[str, Any] | None:
        request = (self.context.get("requests") or {}).get(str(classification.pk))
        return {"id": request.pk, "state": request.state} if request is not None else None


class ClassificationCreateSerializer(serializers.Serializer):
    answers = serializers.JSONField(help_text="question id -> answer, every question (GET ai-systems/questionnaire)")


class ClassificationSubmitSerializer(serializers.Serializer):
    comment = ledgered_text(required=False, default="", min_length=0, allow_blank=True)


class ApprovalRequestRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    action = serializers.CharField()
    rule = serializers.JSONField()


class AISystemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    slug = serializers.CharField()
    name = serializers.CharField()
    purpose = serializers.CharField()
    description = serializers.CharField()
    human_oversight = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    deployers = serializers.ListField(child=serializers.CharField())
    risk_class = serializers.CharField()
    classification = serializers.IntegerField(
        source="classification.number", default=None, allow_null=True,
        help_text="the number of the approved classification in force (null: none approved yet)",
    )  # fmt: skip
    deployment_count = serializers.IntegerField(default=None, allow_null=True)
    classification_count = serializers.IntegerField(default=None, allow_null=True)
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class SystemDeploymentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    environment = serializers.CharField()
    state = serializers.CharField()
    model_version = serializers.IntegerField(source="model_version_id")
    model = serializers.CharField(source="model_version.model.slug")
    model_version_number = serializers.IntegerField(source="model_version.number")
    weights_digest = serializers.CharField(source="model_version.weights_digest")


class SystemModelVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField()
    number = serializers.IntegerField()
    weights_digest = serializers.CharField()


class AISystemDetailSerializer(AISystemSerializer):
    deployments = serializers.SerializerMethodField()
    model_versions = serializers.SerializerMethodField(help_text="the model versions its deployments serve")
    classifications = serializers.SerializerMethodField()

    @extend_schema_field(SystemDeploymentSerializer(many=True))
    def get_deployments(self, system: Any) -> list[dict[str, Any]]:
        return SystemDeploymentSerializer(self.context["deployments"], many=True).data

    @extend_schema_field(SystemModelVersionSerializer(many=True))
    def get_model_versions(self, system: Any) -> list[dict[str, Any]]:
        versions = {d.model_version_id: d.model_version for d in self.context["deployments"]}
        return [
            {"id": v.pk, "model": v.model.slug, "number": v.number, "weights_digest": v.weights_digest}
            for _, v in sorted(versions.items())
        ]

    @extend_schema_field(ClassificationSerializer(many=True))
    def get_classifications(self, system: Any) -> list[dict[str, Any]]:
        return ClassificationSerializer(
            self.context["classifications"], many=True, context={"requests": self.context["requests"]}
        ).data


class ChoiceSerializer(serializers.Serializer):
    value = serializers.CharField()
    label = serializers.CharField()


class QuestionSerializer(serializers.Serializer):
    id = serializers.CharField()
    section = serializers.CharField(help_text="prohibited, high_risk, transparency or gpai")
    text = serializers.CharField()
    article = serializers.CharField()
    kind = serializers.CharField(help_text="yes_no (true/false), one_of (a choice), any_of (a list of choices)")
    choices = ChoiceSerializer(many=True)


class QuestionnaireSerializer(serializers.Serializer):
    questions = QuestionSerializer(many=True)
    risk_classes = serializers.ListField(child=serializers.CharField())
