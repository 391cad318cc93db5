"""``python -m llmops_ledger_verify DIR``: the same as the ``ledger-verify`` command."""

import sys

from llmops_ledger_verify.cli import main

sys.exit(main(prog="python -m llmops_ledger_verify"))
