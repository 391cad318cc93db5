"""``POST /witness/add-checkpoint`` (C2SP tlog-witness): parses nothing itself, answers what
``witness_add_checkpoint`` decides. No session or token: the spec authenticates a request by the
log's signature on the checkpoint alone, so the view is exempt from CSRF."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from audits.ledger.witness.services import MAX_BODY_BYTES, witness_add_checkpoint


@csrf_exempt
@require_POST
def add_checkpoint(request: HttpRequest) -> HttpResponse:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return HttpResponse(
            f"the request body is over {MAX_BODY_BYTES} bytes\n", status=413, content_type="text/plain; charset=utf-8"
        )
    answer = witness_add_checkpoint(body=request.body)
    return HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
