"""Witnessing (C2SP tlog-witness, tlog-cosignature): this service as a log that asks witnesses to
co-sign its checkpoints, and as a witness of other logs."""
