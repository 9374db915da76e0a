"""The bookings API under /api/v1/: what is free, where a request fits, the timeline,
the user's reservations, and staff reports. Thin: serializers check shape, the services
and selectors the pages use do the rest; their ValidationErrors become the one error body
(aivc_portal.api.exception_handler)."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.urls import path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from accounts.selectors import capability_for
from aivc_portal.api import IsStaff
from bookings import serializers as s
from bookings.capacity import availability, earliest_fit
from bookings.limits import usage_for
from bookings.models import Reservation
from bookings.report_views import ReportRangeForm, csv_download, usage_csv_bytes
from bookings.reports import reservations_csv_bytes
from bookings.selectors import hosts_open_to, reservations_for_user, waitlist_for_user

# The booking rules' own readings, reused so each rule and its message exist once: a
# host given as a name or an id, and a window's end (after the start, at most 2 weeks).
from bookings.services import _check_end as check_window_end
from bookings.services import _host_id as host_id_from_input
from bookings.services import (
    hosts_within_maxima,
    reservation_cancel,
    reservation_create,
    reservation_extend,
    reservation_release,
    reservation_request_restart,
)
from bookings.timeline import timeline as build_timeline
from bookings.timeslots import MAX_AHEAD, SLOT, parse_time_input, slot_floor
from bookings.waitlist_services import waitlist_join, waitlist_withdraw
from containers.models import Host
from containers.selectors import bookable_images

ID = r"[0-9]{1,18}"


def requested_window(*, start: datetime | str, end: datetime | str | None, now: datetime) -> tuple:
    """A window asked for in a query, read like a booking's (`now`, `N-day`, ...); no end
    means the rest of the current half hour. At most two weeks long, like a booking."""
    start, _is_now = parse_time_input(start, field="start", base=slot_floor(now), now=now)
    end = start + SLOT if end is None else parse_time_input(end, field="end", base=start)[0]
    check_window_end(start=start, end=end)
    return start, end


def _capacity(cpus, memory_gb, gpus) -> dict:
    return {"cpus": cpus, "memory_gb": memory_gb, "gpus": gpus}


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class HostListView(APIView):
    @extend_schema(
        summary="Hosts with their free capacity over a window",
        parameters=[s.WindowQuerySerializer],
        responses={200: s.HostCapacitySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        query = _validated(s.WindowQuerySerializer, request.query_params)
        start, end = requested_window(start=query["start"], end=query.get("end"), now=timezone.now())
        rows = []
        for host in Host.objects.order_by("name"):
            free = availability(host=host, start=start, end=end)
            maximum = capability_for(user=request.user, host=host)
            rows.append(
                {
                    "id": host.pk,
                    "name": host.name,
                    "address": host.address,
                    "accepting_bookings": host.accepting_bookings,
                    "start": start,
                    "end": end,
                    "total": _capacity(host.cpus, host.memory_gb, free.gpus_total),
                    "free": _capacity(free.cpus, free.memory_gb, free.gpus),
                    "your_maximum": _capacity(maximum.cpus, maximum.memory_gb, maximum.gpus),
                }
            )
        return Response(s.HostCapacitySerializer(rows, many=True).data)


class EarliestFitView(APIView):
    @extend_schema(
        summary="The earliest window where a request fits (on one host, or the earliest on any)",
        parameters=[s.FitQuerySerializer],
        responses={200: s.FitSerializer},
    )
    def get(self, request: Request) -> Response:
        query = _validated(s.FitQuerySerializer, request.query_params)
        hosts = hosts_open_to(user=request.user).filter(accepting_bookings=True)
        if query.get("host"):
            hosts = hosts.filter(pk=host_id_from_input(query["host"]))
        now = timezone.now()
        start, end = requested_window(start=query["start"], end=query["end"], now=now)
        this_slot = slot_floor(now)
        found = earliest_fit(
            hosts=hosts_within_maxima(
                list(hosts),
                user=request.user,
                cpus=query["cpus"],
                memory_gb=query["memory_gb"],
                gpu_count=query["gpu_count"],
            ),
            cpus=query["cpus"],
            memory_gb=query["memory_gb"],
            gpu_count=query["gpu_count"],
            duration=end - start,
            not_before=max(start, this_slot),
            not_after=this_slot + MAX_AHEAD,
            user_id=request.user.pk,
        )
        body = {
            "found": found is not None,
            "host": found.host.name if found else None,
            "start": found.start if found else None,
            "end": found.end if found else None,
        }
        return Response(s.FitSerializer(body).data)


class TimelineView(APIView):
    @extend_schema(
        summary="Every host's GPUs for the next two weeks: who holds them (no commands) and headroom",
        parameters=[OpenApiParameter("host", OpenApiTypes.INT, description="Only this host id.")],
        responses={200: s.TimelineSerializer},
    )
    def get(self, request: Request) -> Response:
        host_id = request.query_params.get("host")
        if host_id is not None and not (host_id.isascii() and host_id.isdigit() and len(host_id) <= 18):
            raise ValidationError({"host": "Give a host id."}, code="invalid")
        data = build_timeline(
            user_id=request.user.pk,
            now=timezone.now(),
            host_id=int(host_id) if host_id else None,
            names_job_owners=request.user.is_staff,
        )

        def at(column: int) -> datetime:
            return data.start + (column - 1) * SLOT

        hosts = [
            {
                "id": row.host.pk,
                "name": row.host.name,
                "gpus": [
                    {"index": gpu_row.gpu.index, "name": gpu_row.gpu.name, "blocks": gpu_row.blocks}
                    for gpu_row in row.gpu_rows
                ],
                "cpu_only": sorted((b for lane in row.cpu_rows for b in lane), key=lambda b: b.start),
                "headroom": [
                    {
                        "start": at(run.column),
                        "end": at(run.column + run.span),
                        "cpus": run.cpus,
                        "memory_gb": run.memory_gb,
                    }
                    for run in row.headroom
                ],
            }
            for row in data.hosts
        ]
        body = {"start": data.start, "end": data.end, "hosts": hosts}
        return Response(s.TimelineSerializer(body).data)


class UsageView(APIView):
    @extend_schema(
        summary="Your usage against your limits: GPU-hours this week and your budget, what you hold now",
        responses={200: s.UsageSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(s.UsageSerializer(usage_for(user=request.user, now=timezone.now())).data)


class ImageListView(APIView):
    @extend_schema(
        summary="Images a reservation may use",
        responses={200: s.ImageSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        images = bookable_images()
        return Response(s.ImageSerializer(images, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="Your reservations, newest first",
        parameters=[s.ReservationFilterSerializer],
        responses={200: s.ReservationSerializer(many=True)},
    ),
    retrieve=extend_schema(summary="One of your reservations", responses={200: s.ReservationSerializer}),
    create=extend_schema(
        summary="Book: the same inputs and rules as the booking form",
        request=s.ReservationCreateSerializer,
        responses={201: s.ReservationSerializer},
    ),
)
class ReservationViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Only the signed-in user's reservations exist here: another user's id answers 404."""

    serializer_class = s.ReservationSerializer
    lookup_value_regex = ID

    def get_queryset(self) -> QuerySet[Reservation]:
        # Bookings only: a job's capacity row belongs to the jobs API.
        return reservations_for_user(user_id=self.request.user.pk).bookings().order_by("-start", "-id")

    def list(self, request: Request) -> Response:
        query = _validated(s.ReservationFilterSerializer, request.query_params)
        rows = self.get_queryset()
        if query.get("status"):
            rows = rows.filter(status__in=query["status"])
        if "after" in query:
            rows = rows.filter(end__gt=query["after"])
        if "before" in query:
            rows = rows.filter(start__lt=query["before"])
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        data = _validated(s.ReservationCreateSerializer, request.data)
        reservation = reservation_create(user=request.user, now=timezone.now(), **data)
        return self._answer(reservation, status=status.HTTP_201_CREATED)

    def _answer(self, reservation: Reservation, *, status: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=reservation.pk)
        return Response(self.get_serializer(fresh).data, status=status)

    @extend_schema(
        summary="Cancel a reservation that has not started",
        request=None,
        responses={200: s.ReservationSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._answer(reservation_cancel(reservation=self.get_object(), now=timezone.now()))

    @extend_schema(
        summary="Release a running reservation now",
        request=None,
        responses={200: s.ReservationSerializer},
    )
    @action(detail=True, methods=["post"])
    def release(self, request: Request, pk: str) -> Response:
        return self._answer(reservation_release(reservation=self.get_object(), now=timezone.now()))

    @extend_schema(
        summary="Move the end later, keeping the same GPUs",
        request=s.ReservationExtendSerializer,
        responses={200: s.ReservationSerializer},
    )
    @action(detail=True, methods=["post"])
    def extend(self, request: Request, pk: str) -> Response:
        reservation = self.get_object()
        data = _validated(s.ReservationExtendSerializer, request.data)
        return self._answer(reservation_extend(reservation=reservation, end=data["end"], now=timezone.now()))

    @extend_schema(
        summary="Recreate the running container (the old -rst)",
        request=None,
        responses={200: s.ReservationSerializer},
    )
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str) -> Response:
        return self._answer(reservation_request_restart(reservation=self.get_object()))


@extend_schema_view(
    list=extend_schema(
        summary="Your waiting booking requests: waiting ones first, then the newest",
        responses={200: s.WaitlistEntrySerializer(many=True)},
    ),
    retrieve=extend_schema(
        summary="One of your waiting booking requests", responses={200: s.WaitlistEntrySerializer}
    ),
    create=extend_schema(
        summary="Wait for a booking that does not fit: it holds nothing and is booked when it fits",
        request=s.WaitlistCreateSerializer,
        responses={201: s.WaitlistEntrySerializer},
    ),
)
class WaitlistViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Only the signed-in user's requests exist here: another user's id answers 404."""

    serializer_class = s.WaitlistEntrySerializer
    lookup_value_regex = ID

    def get_queryset(self):
        return waitlist_for_user(user_id=self.request.user.pk)

    def create(self, request: Request) -> Response:
        data = _validated(s.WaitlistCreateSerializer, request.data)
        entry = waitlist_join(user=request.user, now=timezone.now(), **data)
        return Response(
            self.get_serializer(self.get_queryset().get(pk=entry.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Withdraw a waiting request", request=None, responses={200: s.WaitlistEntrySerializer}
    )
    @action(detail=True, methods=["post"])
    def withdraw(self, request: Request, pk: str) -> Response:
        entry = waitlist_withdraw(entry=self.get_object(), now=timezone.now())
        return Response(self.get_serializer(self.get_queryset().get(pk=entry.pk)).data)


REPORT_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATE, required=True, description="First day, YYYY-MM-DD."),
    OpenApiParameter("to", OpenApiTypes.DATE, required=True, description="Last day (included)."),
    OpenApiParameter("bom", OpenApiTypes.STR, enum=["1"], description="1: a BOM for Excel."),
]
CSV_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="text/csv")


class ReportView(APIView):
    """Staff: the usage reports of the reports page, as CSV."""

    permission_classes = [IsStaff]
    kind = ""
    content = None

    def get(self, request: Request):
        form = ReportRangeForm(request.query_params)
        if not form.is_valid():
            errors = {field: list(messages) for field, messages in form.errors.items()}
            raise ValidationError(errors, code="invalid")
        return csv_download(
            report_range=form.report_range(),
            kind=self.kind,
            content=self.content,
            bom=request.query_params.get("bom") == "1",
        )


@extend_schema_view(
    get=extend_schema(
        summary="Staff: reservations in a date range, CSV",
        parameters=REPORT_PARAMETERS,
        responses={(200, "text/csv"): CSV_RESPONSE},
    )
)
class ReservationReportView(ReportView):
    kind = "reservations"
    content = staticmethod(reservations_csv_bytes)


@extend_schema_view(
    get=extend_schema(
        summary="Staff: usage per user in a date range, CSV",
        parameters=REPORT_PARAMETERS,
        responses={(200, "text/csv"): CSV_RESPONSE},
    )
)
class UsageReportView(ReportView):
    kind = "usage"
    content = staticmethod(usage_csv_bytes)


router = SimpleRouter()
router.register("reservations", ReservationViewSet, basename="api-reservation")
router.register("waitlist", WaitlistViewSet, basename="api-waitlist")

urlpatterns = [
    *router.urls,
    path("hosts/", HostListView.as_view(), name="api-hosts"),
    path("earliest-fit/", EarliestFitView.as_view(), name="api-earliest-fit"),
    path("timeline/", TimelineView.as_view(), name="api-timeline"),
    path("images/", ImageListView.as_view(), name="api-images"),
    path("me/usage/", UsageView.as_view(), name="api-usage"),
    path("reports/reservations.csv", ReservationReportView.as_view(), name="api-report-reservations"),
    path("reports/usage.csv", UsageReportView.as_view(), name="api-report-usage"),
]
