"""The OpenAPI schema class (its own module: DRF's settings import the throttles of
aivc_portal.api while drf-spectacular's AutoSchema imports DRF's views)."""

from drf_spectacular.openapi import AutoSchema

from aivc_portal.api import ERROR_SCHEMA

# Every operation may answer these, all with the one error body: bad input, no or a bad
# token, not allowed, not found (including another user's object), throttled.
ERROR_STATUSES = ("400", "401", "403", "404", "429")


class ApiSchema(AutoSchema):
    """drf-spectacular's schema with the shared error responses on every operation, so a
    client (and schemathesis) knows each answer's shape."""

    def _get_response_bodies(self, direction: str = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        for status in ERROR_STATUSES:
            if status not in responses:
                responses[status] = self._get_response_for_code(ERROR_SCHEMA, status, direction=direction)
        return responses
