from __future__ import annotations

from rest_framework import serializers

from governance.models import Project


class ProjectRoleSerializer(serializers.Serializer):
    project = serializers.SlugField()
    roles = serializers.ListField(child=serializers.CharField())


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    kind = serializers.ChoiceField(choices=["person", "service_account"])
    is_staff = serializers.BooleanField()
    projects = ProjectRoleSerializer(many=True)


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["slug", "name", "description", "created_at"]
        read_only_fields = fields
