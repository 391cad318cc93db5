from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import ListView, no_input, validated
from common.errors import DomainError
from registry import selectors, services
from registry.api.serializers import (
    DatasetCreateSerializer,
    DatasetLineageSerializer,
    DatasetSerializer,
    DatasetVersionDetailSerializer,
    DatasetVersionSerializer,
    ModelLineageSerializer,
    ModelSerializer,
    ModelVersionRegisterSerializer,
    ModelVersionSerializer,
    PiiScanSerializer,
    PromptTemplateSerializer,
    RegisterPathSerializer,
    ReviewSerializer,
    SubjectLookupSerializer,
    UploadSerializer,
)
from registry.models import Dataset, DatasetVersion, Model, ModelVersion, PromptTemplate


class ProjectDatasetsView(ListView):
    """The project's datasets, by slug."""

    serializer_class = DatasetSerializer
    list_operation_id = "datasets_list"

    def get_queryset(self) -> QuerySet[Dataset]:
        project = selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.dataset_list(user=self.request.user, project=project)

    @extend_schema(operation_id="datasets_create", request=DatasetCreateSerializer, responses={201: DatasetSerializer})
    def post(self, request: Request, slug: str) -> Response:
        """Register a dataset with its record-of-processing facts (data stewards)."""
        project = selectors.project_get(user=request.user, slug=slug)
        data = validated(DatasetCreateSerializer, request)
        dataset = services.dataset_create(actor=request.user, project=project, data_steward=request.user, **data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailView(APIView):
    @extend_schema(operation_id="datasets_retrieve", responses=DatasetSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(DatasetSerializer(selectors.dataset_get(user=request.user, pk=pk)).data)


class DatasetVersionsView(ListView):
    """The dataset's versions, oldest first."""

    parser_classes = [MultiPartParser]
    serializer_class = DatasetVersionSerializer
    list_operation_id = "dataset_versions_list"

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        return selectors.version_list(dataset=selectors.dataset_get(user=self.request.user, pk=self.kwargs["pk"]))

    @extend_schema(
        operation_id="dataset_versions_upload",
        request={"multipart/form-data": UploadSerializer},
        responses={201: DatasetVersionSerializer, 200: DatasetVersionSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Upload a JSONL, CSV, Parquet or text file as a new version (200 with the existing
        version when the same bytes were uploaded before). A PII scan starts on its own."""
        dataset = selectors.dataset_get(user=request.user, pk=pk)
        upload = validated(UploadSerializer, request)["file"]
        if upload.size > settings.REGISTRY_MAX_UPLOAD_BYTES:
            raise DomainError("file_too_large", "the file is over REGISTRY_MAX_UPLOAD_BYTES", status_code=413)
        version, created = services.dataset_version_upload(
            actor=request.user, dataset=dataset, filename=upload.name, data=upload.read()
        )
        return Response(DatasetVersionSerializer(version).data, status=201 if created else 200)


class DatasetVersionRegisterPathView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="dataset_versions_register_path",
        request=RegisterPathSerializer,
        responses={201: DatasetVersionSerializer, 200: DatasetVersionSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Register a file already on the server, under one of REGISTRY_ALLOWED_ROOTS."""
        dataset = selectors.dataset_get(user=request.user, pk=pk)
        path = validated(RegisterPathSerializer, request)["path"]
        version, created = services.dataset_version_register_path(actor=request.user, dataset=dataset, path=path)
        return Response(DatasetVersionSerializer(version).data, status=201 if created else 200)


class DatasetVersionDetailView(APIView):
    @extend_schema(operation_id="dataset_versions_retrieve", responses=DatasetVersionDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        """A version with its latest scan: entity types, counts and locations (never values)."""
        return Response(DatasetVersionDetailSerializer(selectors.version_get(user=request.user, pk=pk)).data)


class DatasetVersionReviewView(APIView):
    @extend_schema(operation_id="dataset_versions_review", request=ReviewSerializer, responses=DatasetVersionSerializer)
    def post(self, request: Request, pk: int) -> Response:
        """A data steward's review of found personal data."""
        version = selectors.version_get(user=request.user, pk=pk)
        data = validated(ReviewSerializer, request)
        version = services.dataset_version_review(actor=request.user, version=version, **data)
        return Response(DatasetVersionSerializer(version).data)


class DatasetVersionScanView(APIView):
    @extend_schema(operation_id="dataset_versions_scan", request=None, responses={202: PiiScanSerializer})
    def post(self, request: Request, pk: int) -> Response:
        """Scan the version again (after a failed scan, or with new recognizers)."""
        version = selectors.version_get(user=request.user, pk=pk)
        no_input(request)
        scan = services.pii_scan_request(actor=request.user, version=version)
        return Response(PiiScanSerializer(scan).data, status=status.HTTP_202_ACCEPTED)


class SubjectLookupView(APIView):
    @extend_schema(
        operation_id="data_subject_lookup",
        request=SubjectLookupSerializer,
        responses=DatasetVersionSerializer(many=True),
    )
    def post(self, request: Request, slug: str) -> Response:
        """The dataset versions of the project holding this person (compliance officers). The
        identifier travels in the body, never in a URL, and is recorded only as a keyed hash."""
        project = selectors.project_get(user=request.user, slug=slug)
        data = validated(SubjectLookupSerializer, request)
        versions = services.data_subject_lookup(actor=request.user, project=project, **data)
        return Response(DatasetVersionSerializer(versions, many=True).data)


class ProjectModelsView(ListView):
    """The project's models, by slug."""

    serializer_class = ModelSerializer
    list_operation_id = "models_list"

    def get_queryset(self) -> QuerySet[Model]:
        project = selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.model_list(user=self.request.user, project=project)

    @extend_schema(operation_id="models_create", request=ModelSerializer, responses={201: ModelSerializer})
    def post(self, request: Request, slug: str) -> Response:
        project = selectors.project_get(user=request.user, slug=slug)
        model = services.model_create(actor=request.user, project=project, **validated(ModelSerializer, request))
        return Response(ModelSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelVersionsView(ListView):
    """The model's versions, oldest first."""

    serializer_class = ModelVersionSerializer
    list_operation_id = "model_versions_list"

    def get_queryset(self) -> QuerySet[ModelVersion]:
        return selectors.model_get(user=self.request.user, pk=self.kwargs["pk"]).versions.order_by("number")

    @extend_schema(
        operation_id="model_versions_register",
        request=ModelVersionRegisterSerializer,
        responses={201: ModelVersionSerializer, 200: ModelVersionSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Register the weights in a server folder (under REGISTRY_ALLOWED_ROOTS), with lineage."""
        model = selectors.model_get(user=request.user, pk=pk)
        data = validated(ModelVersionRegisterSerializer, request)
        base = selectors.model_version_get(user=request.user, pk=data["base"]) if data["base"] else None
        datasets = [selectors.version_get(user=request.user, pk=dv) for dv in data["dataset_versions"]]
        version, created = services.model_version_register_folder(
            actor=request.user, model=model, folder=data["folder"], base=base, dataset_versions=datasets
        )
        return Response(ModelVersionSerializer(version).data, status=201 if created else 200)


class ModelVersionLineageView(APIView):
    @extend_schema(operation_id="model_versions_lineage", responses=ModelLineageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        """Where a model version came from: base versions and every dataset version behind it."""
        version = selectors.model_version_get(user=request.user, pk=pk)
        return Response(ModelLineageSerializer(selectors.lineage_of_model_version(version)).data)


class DatasetVersionLineageView(APIView):
    @extend_schema(operation_id="dataset_versions_lineage", responses=DatasetLineageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        """What was derived from a dataset version: derived versions and model versions."""
        version = selectors.version_get(user=request.user, pk=pk)
        return Response(DatasetLineageSerializer(selectors.lineage_of_dataset_version(version)).data)


class ProjectPromptTemplatesView(ListView):
    """The project's prompt templates and chains, by slug and version."""

    serializer_class = PromptTemplateSerializer
    list_operation_id = "prompt_templates_list"

    def get_queryset(self) -> QuerySet[PromptTemplate]:
        project = selectors.project_get(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.prompt_template_list(user=self.request.user, project=project)

    @extend_schema(
        operation_id="prompt_templates_register",
        request=PromptTemplateSerializer,
        responses={201: PromptTemplateSerializer, 200: PromptTemplateSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        """A new version of a template or chain (the same content returns the existing version)."""
        project = selectors.project_get(user=request.user, slug=slug)
        data = validated(PromptTemplateSerializer, request)
        template, created = services.prompt_template_register(actor=request.user, project=project, **data)
        return Response(PromptTemplateSerializer(template).data, status=201 if created else 200)


class DatasetVersionDeduplicateView(APIView):
    @extend_schema(
        operation_id="dataset_versions_deduplicate",
        request=None,
        responses={201: DatasetVersionSerializer, 200: DatasetVersionSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        """A derived version without the exact duplicates (lineage points back)."""
        version = selectors.version_get(user=request.user, pk=pk)
        no_input(request)
        derived, created = services.dataset_version_deduplicate(actor=request.user, version=version)
        return Response(DatasetVersionSerializer(derived).data, status=201 if created else 200)


class DatasetVersionAnonymiseView(APIView):
    @extend_schema(operation_id="dataset_versions_anonymise", request=None, responses={202: None})
    def post(self, request: Request, pk: int) -> Response:
        """Build an anonymised derived version in the background (data stewards); it appears in
        the dataset's versions with ``derivation: anonymised`` and gets its own scan."""
        version = selectors.version_get(user=request.user, pk=pk)
        no_input(request)
        services.dataset_version_anonymise_request(actor=request.user, version=version)
        return Response(status=status.HTTP_202_ACCEPTED)
