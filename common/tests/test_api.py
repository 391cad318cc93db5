"""The shared API inputs of ``common.api``: ledgered text takes JSON strings only, and the one reason
input keeps its bounds; a refusal answers the one error shape, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from common.api import ReasonInputSerializer, validated

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)


class _ReasonView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        return Response(validated(ReasonInputSerializer, request))


def _post(body: Any) -> Response:
    request = APIRequestFactory().post("/reason", body, format="json")
    return _ReasonView.as_view()(request)


@pytest.mark.parametrize(
    ("value", "kind"), [(5, "a number"), (2.5, "a number"), (True, "a boolean"), (["x"], "a list"), ({}, "an object")]
)
def test_a_reason_that_is_not_text_is_a_400_naming_the_field(value: Any, kind: str) -> None:
    response = _post({"reason": value})
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid_input"
    assert response.data["error"]["message"] == "invalid input: reason"
    assert response.data["error"]["fields"] == {"reason": [f"Must be text (a JSON string), not {kind}."]}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "This field is required."),
        ({"reason": None}, "This field may not be null."),
        ({"reason": ""}, "This field may not be blank."),
        ({"reason": "   "}, "This field may not be blank."),
        ({"reason": "x" * 2001}, "Ensure this field has no more than 2000 characters."),
    ],
)
def test_a_reason_is_required_and_bounded(body: dict[str, Any], problem: str) -> None:
    response = _post(body)
    assert response.status_code == 400 and response.data["error"]["fields"] == {"reason": [problem]}


def test_a_reason_is_trimmed_and_may_be_2000_characters() -> None:
    assert _post({"reason": "  checked \n"}).data == {"reason": "checked"}
    assert _post({"reason": "x" * 2000}).status_code == 200
