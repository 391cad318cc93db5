from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.serializers import MeSerializer, ProjectSerializer
from governance.models import Project
from governance.selectors import project_list, project_roles_of


class MeView(APIView):
    """Who the caller is, and which roles it holds in which projects."""

    @extend_schema(responses=MeSerializer, operation_id="me")
    def get(self, request: Request) -> Response:
        user = request.user
        projects = [{"project": project.slug, "roles": roles} for project, roles in project_roles_of(user=user)]
        data = {
            "username": user.get_username(),
            "kind": "service_account" if hasattr(user, "service_account") else "person",
            "is_staff": user.is_staff,
            "projects": projects,
        }
        return Response(MeSerializer(data).data)


class ProjectListView(generics.ListAPIView):
    """Projects the caller holds a role in (all of them, for platform admins)."""

    serializer_class = ProjectSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return project_list(user=self.request.user)


class ProjectDetailView(generics.RetrieveAPIView):
    serializer_class = ProjectSerializer
    lookup_field = "slug"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        # A project the caller may not see answers 404, exactly like one that does not exist.
        return project_list(user=self.request.user) if self.request.user else Project.objects.none()
