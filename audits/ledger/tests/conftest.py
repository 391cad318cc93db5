from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model

from audits.ledger.services import Appended, Subject, ledger_append


@pytest.fixture
def actor(db: None) -> object:
    return get_user_model().objects.create_user(username="ledger-tester")


@pytest.fixture
def append(actor: object) -> Callable[..., Appended]:
    def _append(n: int = 1, action: str = "test.event", **payload: object) -> Appended:
        last = None
        for i in range(n):
            last = ledger_append(
                actor=actor, action=action, subject=Subject(type="thing", id=str(i)), payload={"i": i, **payload}
            )
        assert last is not None
        return last

    return _append
