"""Verify an exported ledger bundle offline: ``ledger-verify DIR [--key KEY ...] [--checkpoint FILE ...]``.

``ledger-verify PROOF.json [--key KEY ...]`` verifies one entry's inclusion proof file instead (the
file the admin's inclusion proof page downloads; see ``proof``): the entry's bytes, the audit path
to the signed root and the checkpoint's signatures.

Needs only Python and ``cryptography``; it never imports Django and never contacts the service.
It re-hashes every entry's exact bytes, checks that the decoded copy matches them, rebuilds the
RFC 9162 roots, checks every checkpoint's Ed25519 signatures and that each signed root matches
the entries. Exit status 0 when all holds; 1 with the first failing file, entry or checkpoint
named; 2 when the command line is wrong (no such folder, a malformed ``--key``, a missing file).

``ledger-verify RECEIPT.cose --entry ENTRY --key KEY [--origin ORIGIN]`` verifies an entry's SCITT
receipt (RFC 9942 COSE receipt, ``GET /api/v1/ledger/entries/{index}/receipt``, or embedded in a
report as ``ledger-receipt-<index>.cose``; see ``receipt``) against the entry's exact bytes (the
decoded ``body_b64`` of the entry); a receipt carries no keys, so ``--key`` is required.

Pin the log's keys with ``--key`` (obtained from the log operator out of band); without it the
bundle's own ``keys.txt`` is trusted, and the verifier says so. Pass checkpoints you saved earlier
(``GET /api/v1/ledger/checkpoint``) with ``--checkpoint FILE``: the bundle must hold their trees,
so a history rewritten and signed again since (by the operator's own key, which the signatures
alone cannot tell from the first) is caught.

Witnesses: ``--witness VKEY`` (repeatable; a witness's C2SP cosignature/v1 verifier key, from the
witness operator) and ``--witness-quorum K``: at least one checkpoint of the bundle (or of those
given with ``--checkpoint``) must carry valid co-signatures of K of the witnesses given, and no two
co-signed trees of one size may differ; a co-signed root that the entries do not reproduce fails
like any other signed root. The entries after the last witnessed checkpoint are named. Without
``--witness`` the bundle's ``witnesses.txt`` is used to report co-signatures, never to meet a quorum.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmops_ledger_verify import __version__
from llmops_ledger_verify.bundle import verify_bundle
from llmops_ledger_verify.cosignature import CosignerKey
from llmops_ledger_verify.keys import KeyFileError, VerifierKey
from llmops_ledger_verify.proof import read_proof_file, verify_proof
from llmops_ledger_verify.receipt import COSE_SIGN1_TAG, verify_receipt
from llmops_ledger_verify.replay import VerificationFailed

OK, FAILED, USAGE = 0, 1, 2


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "bundle", type=Path, help="directory written by `manage.py ledger export`, or one entry's inclusion proof file"
    )
    parser.add_argument("--key", action="append", default=[], help="a verifier key to trust (repeatable)")
    parser.add_argument("--origin", help="the log's origin line to require")
    parser.add_argument(
        "--checkpoint", action="append", default=[], type=Path,
        help="a signed checkpoint saved earlier, whose tree the bundle must hold (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--witness", action="append", default=[], help="a witness's cosignature/v1 verifier key to trust (repeatable)"
    )
    parser.add_argument(
        "--witness-quorum", type=int, default=0, metavar="K",
        help="require a checkpoint co-signed by K of the --witness keys (default 0: none required)",
    )  # fmt: skip
    parser.add_argument("--entry", type=Path, help="with a receipt: the file of the entry's exact bytes")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None, prog: str = "ledger-verify") -> int:
    """Run the verifier; returns the exit status (argparse itself exits 2 on a malformed line)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        pinned = [VerifierKey.decode(k) for k in args.key]
    except KeyFileError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: --key: {exc}", file=sys.stderr)
        return USAGE
    try:
        witnesses = [CosignerKey.decode(k) for k in args.witness]
    except KeyFileError as exc:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: --witness: {exc}", file=sys.stderr)
        return USAGE
    if not 0 <= args.witness_quorum <= len(witnesses):
        parser.print_usage(sys.stderr)
        print(
            f"{prog}: error: --witness-quorum {args.witness_quorum} needs at least that many --witness keys "
            f"({len(witnesses)} given)",
            file=sys.stderr,
        )
        return USAGE
    if args.bundle.is_file() and args.bundle.read_bytes()[:1] == bytes([0xC0 | COSE_SIGN1_TAG]):
        problems = [] if pinned else ["--key is required: a receipt carries no keys"]
        problems += [] if args.entry and args.entry.is_file() else ["--entry FILE (the entry's bytes) is required"]
        if problems:
            parser.print_usage(sys.stderr)
            print(f"{prog}: error: {'; '.join(problems)}", file=sys.stderr)
            return USAGE
        return _receipt(args.bundle, args.entry, pinned, args.origin)
    if args.bundle.is_file():
        if args.checkpoint:
            parser.print_usage(sys.stderr)
            print(f"{prog}: error: --checkpoint is for bundles; a proof file holds its checkpoint", file=sys.stderr)
            return USAGE
        return _proof(args.bundle, pinned, args.origin)
    # An argument that names nothing is the auditor's slip, not a fault of the bundle.
    missing = [f"{args.bundle} is neither a directory nor a file"] if not args.bundle.is_dir() else []
    missing += [f"--checkpoint {path} is not a file" for path in args.checkpoint if not path.is_file()]
    if missing:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {'; '.join(missing)}", file=sys.stderr)
        return USAGE
    try:
        try:
            outcome = verify_bundle(
                args.bundle, pinned, args.origin, args.checkpoint, witnesses=witnesses, quorum=args.witness_quorum
            )
        except OSError as exc:  # say, a folder where a file belongs, or unreadable files
            raise VerificationFailed(exc.filename or str(args.bundle), f"cannot be read ({exc.strerror})") from None
    except VerificationFailed as failure:
        print(f"FAIL {failure.where}: {failure.why}", file=sys.stderr)
        return FAILED
    if outcome["keys_from_bundle"]:
        print("note: keys taken from the bundle's keys.txt; pin them with --key to verify independently")
    if outcome["unsigned_entries"]:
        print(
            f"note: the last {outcome['unsigned_entries']} entries follow the last checkpoint; no signature covers them"
        )
    if outcome["unwitnessed_entries"] is not None:
        if outcome["witness_keys_from_bundle"]:
            print("note: witness keys taken from the bundle's witnesses.txt; pin them with --witness")
        if outcome["witnessed_size"] < 0:
            print("note: no checkpoint carries a co-signature of a known witness")
        else:
            print(
                f"witnessed: {outcome['witnessed_notes']} co-signed checkpoints verified; "
                f"the tree of size {outcome['witnessed_size']} is co-signed by "
                f"{', '.join(outcome['witnessed_by'])}"
                + (f"; the last {outcome['unwitnessed_entries']} entries are not witnessed yet"
                   if outcome["unwitnessed_entries"] else "")
            )  # fmt: skip
    print(f"OK {outcome['tree_size']} entries, {outcome['checkpoints']} checkpoints verified; root {outcome['root']}")
    return OK


def _proof(path: Path, pinned: list[VerifierKey], origin: str | None) -> int:
    try:
        try:
            outcome = verify_proof(read_proof_file(path), pinned, origin)
        except OSError as exc:
            raise VerificationFailed(str(path), f"cannot be read ({exc.strerror})") from None
    except VerificationFailed as failure:
        print(f"FAIL {failure.where}: {failure.why}", file=sys.stderr)
        return FAILED
    if outcome["keys_from_file"]:
        print("note: keys taken from the proof file; pin them with --key to verify independently")
    print(
        f"OK entry {outcome['index']} is included in the checkpoint of tree size {outcome['tree_size']} "
        f"signed by {', '.join(outcome['signed_by'])}; root {outcome['root']}"
    )
    return OK


def _receipt(path: Path, entry: Path, pinned: list[VerifierKey], origin: str | None) -> int:
    try:
        try:
            outcome = verify_receipt(path.read_bytes(), pinned, entry=entry.read_bytes(), origin=origin)
        except OSError as exc:
            raise VerificationFailed(exc.filename or str(path), f"cannot be read ({exc.strerror})") from None
    except VerificationFailed as failure:
        print(f"FAIL {failure.where}: {failure.why}", file=sys.stderr)
        return FAILED
    print(
        f"OK receipt: entry {outcome['index']} is included in the checkpoint of tree size {outcome['tree_size']} "
        f"of {outcome['origin']}, signed by {outcome['signed_by']}; root {outcome['root']}"
    )
    return OK
