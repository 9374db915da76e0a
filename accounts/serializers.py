"""Shapes of the accounts API: the profile and personal access tokens."""

from rest_framework import serializers

from accounts.models import ApiToken, LimitKind, LimitRequest, Notification, User


class ProfileSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="May be empty.")
    default_image = serializers.CharField(
        source="default_image.reference", allow_null=True, default=None, read_only=True
    )

    class Meta:
        model = User
        fields = (
            "username",
            "email",
            "forward_port",
            "ssh_public_keys",
            "default_image",
            "default_extra_command",
        )
        read_only_fields = fields


class ProfileUpdateSerializer(serializers.Serializer):
    """Any subset; what is left out keeps its value."""

    ssh_public_keys = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    default_image = serializers.CharField(
        required=False, allow_null=True, max_length=255, help_text="Image reference or id; null: the lab's."
    )
    default_extra_command = serializers.CharField(
        required=False, allow_blank=True, max_length=1000, trim_whitespace=False
    )
    forward_port = serializers.IntegerField(required=False)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = (
            "id",
            "name",
            "prefix",
            "scope",
            "created_at",
            "last_used_at",
            "last_used_from",
            "expires_at",
            "revoked_at",
        )
        read_only_fields = fields


SCOPE_HELP = (
    "read: only reads; book (the default): also books and runs jobs. "
    "No token manages tokens or SSH keys: that needs a logged-in browser session."
)
EXPIRY_HELP = "Empty: API_TOKEN_DEFAULT_DAYS (90) from now; at most API_TOKEN_MAX_DAYS."


def scope_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=ApiToken.Scope.choices, default=ApiToken.Scope.BOOK, help_text=SCOPE_HELP
    )


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text=EXPIRY_HELP)
    scope = scope_field()


class NewApiTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="Shown only in this answer; keep it secret.")

    class Meta(ApiTokenSerializer.Meta):
        fields = (*ApiTokenSerializer.Meta.fields, "token")
        read_only_fields = fields


class PasswordLoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)
    name = serializers.CharField(max_length=100, default="aivc command line")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text=EXPIRY_HELP)
    scope = scope_field()


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ("id", "kind", "title", "body", "link", "created_at", "read_at")
        read_only_fields = fields


class NotificationReadSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=1000,
        help_text="Only these; leave out to mark all read.",
    )


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField()


class LimitRequestSerializer(serializers.ModelSerializer):
    profile = serializers.CharField(source="profile.name", allow_null=True, default=None)
    summary = serializers.CharField()
    granted = serializers.SerializerMethodField()

    class Meta:
        model = LimitRequest
        fields = (
            "id",
            "kind",
            "summary",
            "gpu_hours_per_week",
            "gpus_at_once",
            "cpus_at_once",
            "memory_gb_at_once",
            "profile",
            "ends_at",
            "reason",
            "status",
            "note",
            "created_at",
            "decided_at",
            "granted",
        )
        read_only_fields = fields

    def get_granted(self, request: LimitRequest) -> bool:
        return request.status == LimitRequest.Status.APPROVED


class LimitRequestCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LimitKind.choices)
    until = serializers.DateField(help_text="The last day it applies, YYYY-MM-DD (at most 120 days ahead).")
    reason = serializers.CharField(max_length=2000)
    gpu_hours_per_week = serializers.CharField(required=False, allow_null=True, max_length=32)
    gpus_at_once = serializers.CharField(required=False, allow_null=True, max_length=32)
    cpus_at_once = serializers.CharField(required=False, allow_null=True, max_length=32)
    memory_gb_at_once = serializers.CharField(required=False, allow_null=True, max_length=32)
    profile = serializers.CharField(
        required=False, allow_null=True, max_length=64, help_text="Profile name or id."
    )
