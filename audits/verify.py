"""``python -m audits.verify DIR [--key KEY ...] [--checkpoint FILE ...]``: the offline ledger verifier,
run from the project's checkout.

The verifier is the standalone package in ``verifier/`` (module ``llmops_ledger_verify``, command
``ledger-verify``) that an auditor installs alone into an empty virtualenv; ``make install`` installs
it into the project's. This module only names it here: it never imports Django.
"""

from __future__ import annotations

import sys

from llmops_ledger_verify.bundle import verify_bundle
from llmops_ledger_verify.cli import main as _main

__all__ = ["main", "verify_bundle"]


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m audits.verify")


if __name__ == "__main__":
    sys.exit(main())
