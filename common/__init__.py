"""Floor 0: small helpers every app may use, and that import no app of ours.

It holds the request context (the request id that log lines and ledger entries carry), the JSON
log formatter, the one domain error type with its API error handler, and infrastructure with no
business rule: the transactional outbox (``common.outbox``, the one model here), worker claims and
rate-limit counters. Business rules and governed models belong to the apps on the floors above.
"""
