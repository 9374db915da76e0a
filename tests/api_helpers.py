"""Helpers shared by the API tests: clients that speak as a user through a token."""

from rest_framework.test import APIClient

from accounts.token_services import api_token_create


def token_client(user, *, name: str = "tests") -> APIClient:
    _token, raw = api_token_create(user=user, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def assert_error_shape(body: dict) -> None:
    assert set(body) == {"detail", "code", "errors"}
    assert isinstance(body["detail"], str) and body["detail"]
    assert all(isinstance(messages, list) for messages in body["errors"].values())
