"""The accounts API under /api/v1/: the user's profile and personal access tokens."""

from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from accounts import serializers as s
from accounts.authentication import came_with_a_token, refuse_a_token
from accounts.backends import DIRECTORY_DOWN_MESSAGE, directory_was_down
from accounts.grant_selectors import limit_requests_for_user
from accounts.grant_services import limit_request_create
from accounts.models import ApiToken, LimitRequest, Notification, User
from accounts.notification_selectors import notifications_for_user
from accounts.notification_services import notifications_mark_read
from accounts.services import user_update_profile
from accounts.token_services import api_token_create, api_token_revoke
from aivc_portal.api import LoginThrottle
from bookings.services import NOT_AVAILABLE_IMAGE, as_id, forward_port_change
from containers.models import Image


def _active_image(value: str | None) -> Image | None:
    """An image named by reference or id; None stays None (the lab's default)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    pk = as_id(text)
    image = Image.objects.filter(**({"pk": pk} if pk is not None else {"reference": text})).first()
    if image is None or not image.is_active:
        raise ValidationError({"default_image": NOT_AVAILABLE_IMAGE}, code="image_unavailable")
    return image


class ProfileView(APIView):
    @extend_schema(
        summary="Your profile: SSH keys, default image and command, forward port",
        responses={200: s.ProfileSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(s.ProfileSerializer(request.user).data)

    @extend_schema(
        summary="Change your SSH keys, default image or command, or forward port",
        request=s.ProfileUpdateSerializer,
        responses={200: s.ProfileSerializer},
    )
    def patch(self, request: Request) -> Response:
        serializer = s.ProfileUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user: User = request.user
        if "ssh_public_keys" in data:
            refuse_a_token(request, what=_("Changing your SSH keys"))
        with transaction.atomic():
            if "forward_port" in data:
                user = forward_port_change(user=user, port=data["forward_port"])
            image = _active_image(data["default_image"]) if "default_image" in data else user.default_image
            user = user_update_profile(
                user=user,
                ssh_public_keys=data.get("ssh_public_keys", user.ssh_public_keys),
                default_image=image,
                default_extra_command=data.get("default_extra_command", user.default_extra_command),
            )
        return Response(s.ProfileSerializer(user).data)


@extend_schema_view(
    list=extend_schema(summary="Your personal access tokens (never their secret)"),
    create=extend_schema(
        summary="Make a token; the answer is the only time it is shown",
        request=s.ApiTokenCreateSerializer,
        responses={201: s.NewApiTokenSerializer},
    ),
    destroy=extend_schema(summary="Revoke a token", responses={204: None}),
)
class ApiTokenViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.ApiTokenSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.filter(user=self.request.user).order_by("-created_at", "-id")

    def list(self, request: Request, *args, **kwargs) -> Response:
        refuse_a_token(request, what=_("Managing tokens"))
        return super().list(request, *args, **kwargs)

    def create(self, request: Request) -> Response:
        refuse_a_token(request, what=_("Managing tokens"))
        serializer = s.ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = api_token_create(user=request.user, now=timezone.now(), **serializer.validated_data)
        token.token = raw
        return Response(s.NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, pk: str) -> Response:
        token = self.get_object()
        # A token may end itself (`aivc logout`), which only ever shortens what a leak gives.
        if not (came_with_a_token(request) and request.auth.pk == token.pk):
            refuse_a_token(request, what=_("Managing tokens"))
        api_token_revoke(token=token, now=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)


class DirectoryUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = DIRECTORY_DOWN_MESSAGE
    default_code = "directory_unavailable"


class PasswordLoginView(APIView):
    """For `aivc login`: an account id and password buy a named token. Throttled per
    address; an account that must change its password does that on the portal first."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [LoginThrottle]

    @extend_schema(
        summary="Make a personal access token with your account id and password",
        request=s.PasswordLoginSerializer,
        responses={201: s.NewApiTokenSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = s.PasswordLoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None and directory_was_down(request._request):
            raise DirectoryUnavailable()
        if user is None:
            raise exceptions.AuthenticationFailed("Wrong account id or password.")
        if user.must_change_password:
            raise exceptions.PermissionDenied("Change your password on the portal first, then log in.")
        token, raw = api_token_create(
            user=user,
            name=data["name"],
            expires_at=data.get("expires_at"),
            scope=data["scope"],
            now=timezone.now(),
        )
        token.token = raw
        return Response(s.NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


@extend_schema_view(list=extend_schema(summary="Your notifications, newest first"))
class NotificationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.NotificationSerializer

    def get_queryset(self) -> QuerySet[Notification]:
        return notifications_for_user(user_id=self.request.user.pk)

    @extend_schema(
        summary="Mark your notifications read (all, or the ids given)",
        request=s.NotificationReadSerializer,
        responses={200: s.MarkedSerializer},
    )
    @action(detail=False, methods=["post"])
    def read(self, request: Request) -> Response:
        serializer = s.NotificationReadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        marked = notifications_mark_read(user=request.user, ids=serializer.validated_data.get("ids"))
        return Response({"marked": marked})


@extend_schema_view(
    list=extend_schema(summary="Your requests for more, newest first, with their answers"),
    retrieve=extend_schema(summary="One of your requests for more"),
    create=extend_schema(
        summary="Ask for more until a day: a budget, caps at once, another profile or a priority boost",
        request=s.LimitRequestCreateSerializer,
        responses={201: s.LimitRequestSerializer},
    ),
)
class LimitRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Only the signed-in user's requests exist here: another user's id answers 404."""

    serializer_class = s.LimitRequestSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[LimitRequest]:
        return limit_requests_for_user(user_id=self.request.user.pk)

    def create(self, request: Request) -> Response:
        serializer = s.LimitRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        made = limit_request_create(user=request.user, now=timezone.now(), **serializer.validated_data)
        return Response(self.get_serializer(made).data, status=status.HTTP_201_CREATED)


router = SimpleRouter()
router.register("tokens", ApiTokenViewSet, basename="api-token")
router.register("notifications", NotificationViewSet, basename="api-notification")
router.register("limit-requests", LimitRequestViewSet, basename="api-limit-request")

urlpatterns = [
    path("profile/", ProfileView.as_view(), name="api-profile"),
    path("auth/token/", PasswordLoginView.as_view(), name="api-login"),
    *router.urls,
]
