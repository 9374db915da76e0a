"""The jobs API under /api/v1/jobs/: the same services, rules, messages and ownership as
the pages (another user's job answers 404)."""

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from aivc_portal.api import error_responses
from jobs import logs, selectors
from jobs import serializers as s
from jobs.models import Job
from jobs.services import job_cancel, job_hold, job_release, job_submit

ID = r"[0-9]{1,18}"


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema_view(
    list=extend_schema(
        summary="Your jobs, newest first",
        parameters=[s.JobFilterSerializer],
        responses={200: s.JobSerializer(many=True), **error_responses(400, 401, 403, 429)},
    ),
    retrieve=extend_schema(summary="One of your jobs", responses={200: s.JobSerializer}),
    create=extend_schema(
        summary="Queue a job: the same inputs and rules as the submit form",
        request=s.JobCreateSerializer,
        responses={201: s.JobSerializer, **error_responses(400, 401, 403, 429)},
    ),
)
class JobViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Only the signed-in user's jobs exist here."""

    serializer_class = s.JobSerializer
    lookup_value_regex = ID

    def get_serializer_context(self) -> dict:
        return {
            **super().get_serializer_context(),
            "positions": selectors.queue_positions(now=timezone.now()),
        }

    def get_queryset(self) -> QuerySet[Job]:
        return selectors.jobs_for_user(user_id=self.request.user.pk).order_by("-submitted_at", "-id")

    def list(self, request: Request) -> Response:
        query = _validated(s.JobFilterSerializer, request.query_params)
        rows = self.get_queryset()
        if query.get("status"):
            rows = rows.filter(status__in=query["status"])
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        data = _validated(s.JobCreateSerializer, request.data)
        job = job_submit(user=request.user, now=timezone.now(), **data)
        return Response(
            self.get_serializer(self.get_queryset().get(pk=job.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Cancel a job: a queued one leaves the queue, a running one is stopped",
        request=None,
        responses={200: s.JobSerializer, **error_responses(400, 401, 403, 404, 429)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        job = job_cancel(job=self.get_object(), now=timezone.now())
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)

    @extend_schema(
        summary="Hold a queued job: the scheduler skips it until released; its place is kept",
        request=None,
        responses={200: s.JobSerializer, **error_responses(400, 401, 403, 404, 429)},
    )
    @action(detail=True, methods=["post"])
    def hold(self, request: Request, pk: str) -> Response:
        job = job_hold(job=self.get_object(), by=request.user, now=timezone.now())
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)

    @extend_schema(
        summary="Release a held job: it waits again at the place its submit time gives it",
        request=None,
        responses={200: s.JobSerializer, **error_responses(400, 401, 403, 404, 429)},
    )
    @action(detail=True, methods=["post"])
    def release(self, request: Request, pk: str) -> Response:
        job = job_release(job=self.get_object())
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)

    @extend_schema(
        summary="The last lines of the job's log",
        parameters=[s.LogQuerySerializer],
        responses={200: s.JobLogSerializer, **error_responses(400, 401, 403, 404, 429)},
    )
    @action(detail=True, methods=["get"])
    def log(self, request: Request, pk: str) -> Response:
        job = self.get_object()
        query = _validated(s.LogQuerySerializer, request.query_params)
        body = {
            "id": job.pk,
            "status": job.status,
            "log": logs.log_tail(job_id=job.pk, lines=query["tail"]),
            "log_size": job.log_size,
            "log_truncated": job.log_truncated,
        }
        return Response(s.JobLogSerializer(body).data)


router = SimpleRouter()
router.register("jobs", JobViewSet, basename="api-job")
urlpatterns = router.urls
