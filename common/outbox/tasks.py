from __future__ import annotations

from celery import shared_task


@shared_task(name="outbox.relay")
def relay() -> int:
    from common.tasks import outbox_prune, outbox_relay

    sent = outbox_relay()
    outbox_prune()
    return sent
