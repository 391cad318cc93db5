"""Models of witnessing: co-signatures of this ledger's checkpoints, and the logs this service witnesses."""
