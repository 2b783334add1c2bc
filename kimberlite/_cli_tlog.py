"""The verifiable-log subcommands of the ``kimberlite`` command line (docs/TLOG.md):

    keygen NAME [--out FILE]            new Ed25519 key pair: the signer key goes to FILE
                                        (default NAME.key, '/' as '_'), created 0600 and
                                        never overwritten; the verifier key is printed
    checkpoint DIR STREAM --key FILE    sign the stream's durable tree, store the
               [--origin O]             checkpoint, print the note
    prove DIR STREAM OFFSET [--size N]  print the inclusion proof of one record
    consistency DIR STREAM OLD [NEW]    print the consistency proof between two sizes
    export-tiles DIR STREAM OUT         write a static C2SP tlog-tiles directory for the
                                        stream's latest checkpoint (--note FILE: another)
    verify-checkpoint NOTE --vkey KEY   check a note's signature (KEY: a verifier key, or a
               [--since OLD --proof P]  file holding one); with --since, also that NOTE
                                        extends the checkpoint OLD by the consistency proof P

Proofs are printed in the text form of docs/TLOG.md ("Proofs as text"); ``--json`` prints
data as JSON. Errors are one line on stderr and exit status 1 (cli.main).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import functools
from typing import Any, Callable, Dict, List, Optional, TypeVar, cast

import kimberlite
from kimberlite import tlog


def _cli_error(message: str) -> Exception:
    from kimberlite.cli import CliError
    return CliError(message)


def _read_file(name: str, what: str) -> bytes:
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as e:
        raise _cli_error(f"cannot read {what} {name}: {e.strerror}") from None


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _checkpoint_json(cp: tlog.Checkpoint) -> Dict[str, Any]:
    return {"origin": cp.origin, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex(),
            "note": cp.note.decode("utf-8")}


def _proof_out(args: argparse.Namespace, kind: str, a: int, b: int, proof: List[bytes]) -> None:
    if args.json:
        names = ("index", "tree_size") if kind == "inclusion" else ("old_size", "new_size")
        _print_json({"type": kind, names[0]: a, names[1]: b, "proof": [h.hex() for h in proof]})
    else:
        sys.stdout.write(tlog._format_proof(kind, a, b, proof))


_F = TypeVar("_F", bound=Callable[[argparse.Namespace], int])


def _guard(fn: _F) -> _F:
    """Bad values (a malformed key, a size out of range) as one-line errors."""
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, TypeError) as e:
            raise _cli_error(str(e)) from None
    return cast(_F, run)


@_guard
def cmd_keygen(args: argparse.Namespace) -> int:
    """Generate an Ed25519 key pair: the signer key to a new file (mode 0600), the verifier
    key on stdout."""
    skey, vkey = tlog.generate_key(args.name)
    out = args.out or args.name.replace("/", "_") + ".key"
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise _cli_error(f"{out} exists; a key file is never overwritten: pass --out") from None
    except OSError as e:
        raise _cli_error(f"cannot create {out}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(skey + "\n")
    if args.json:
        _print_json({"name": args.name, "verifier_key": vkey, "signer_key_file": out})
    else:
        print(vkey)
    return 0


@_guard
def cmd_checkpoint(args: argparse.Namespace) -> int:
    """Sign the stream's durable tree with the signer key in --key, store it as the stream's
    latest checkpoint and print the note."""
    skey = _read_file(args.key, "signer key").decode("utf-8", "replace").strip()
    signer = tlog.Signer(skey)
    if not os.path.isdir(args.dir):
        raise _cli_error(f"{args.dir}: no such data directory")
    with kimberlite.Storage(args.dir) as s:
        cp = s.checkpoint(args.stream, signer, origin=args.origin)
    if args.json:
        _print_json(_checkpoint_json(cp))
    else:
        sys.stdout.write(cp.note.decode("utf-8"))
    return 0


def _open_reader(data_dir: str) -> kimberlite.Storage:
    if not os.path.isdir(data_dir):
        raise _cli_error(f"{data_dir}: no such data directory")
    return kimberlite.Storage(data_dir, read_only=True)


@_guard
def cmd_prove(args: argparse.Namespace) -> int:
    """Print the inclusion proof of the record at OFFSET in the tree of --size records
    (default: the whole stream)."""
    with _open_reader(args.dir) as s:
        size = args.size if args.size is not None else s.next_offset(args.stream)
        proof = s.inclusion_proof(args.stream, args.offset, size)
    _proof_out(args, "inclusion", args.offset, size, proof)
    return 0


@_guard
def cmd_consistency(args: argparse.Namespace) -> int:
    """Print the consistency proof from the tree of OLD records to that of NEW (default: the
    whole stream)."""
    with _open_reader(args.dir) as s:
        new = args.new if args.new is not None else s.next_offset(args.stream)
        proof = s.consistency_proof(args.stream, args.old, new)
    _proof_out(args, "consistency", args.old, new, proof)
    return 0


@_guard
def cmd_export_tiles(args: argparse.Namespace) -> int:
    """Write a static C2SP tlog-tiles directory OUT for the stream's latest stored checkpoint
    (or the checkpoint note in --note, opened with --vkey)."""
    with _open_reader(args.dir) as s:
        if args.note is not None:
            if args.vkey is None:
                raise _cli_error("--note needs --vkey (the note's signature is checked)")
            cp = tlog.open_checkpoint(_read_file(args.note, "note"),
                                      tlog.Verifier(_verifier_key(args.vkey)))
        else:
            latest = s.latest_checkpoint(args.stream)
            if latest is None:
                raise _cli_error(f"stream {args.stream} has no checkpoint: run kimberlite "
                                 "checkpoint first, or pass --note")
            cp = latest
        s.export_tiles(args.stream, args.out, cp)
    if args.json:
        _print_json({"directory": args.out, **_checkpoint_json(cp)})
    else:
        print(f"{args.out}: tiles of {cp.origin} at {cp.tree_size} records")
    return 0


def _verifier_key(text: str) -> str:
    if os.path.isfile(text):
        return _read_file(text, "verifier key").decode("utf-8", "replace").strip()
    return text


@_guard
def cmd_verify_checkpoint(args: argparse.Namespace) -> int:
    """Check a checkpoint note's signature by the verifier key; with --since and --proof, also
    that it extends an older checkpoint. Needs no data directory."""
    verifier = tlog.Verifier(_verifier_key(args.vkey))
    cp = tlog.open_checkpoint(_read_file(args.note, "note"), verifier, origin=args.origin)
    result: Dict[str, Any] = {"ok": True, **_checkpoint_json(cp)}
    if (args.since is None) != (args.proof is None):
        raise _cli_error("--since and --proof go together")
    if args.since is not None:
        old = tlog.open_checkpoint(_read_file(args.since, "note"), verifier, origin=cp.origin)
        kind, a, b, proof = tlog._parse_proof(_read_file(args.proof, "proof"))
        if kind != "consistency" or (a, b) != (old.tree_size, cp.tree_size):
            raise tlog.InvalidProofError(
                f"the proof is '{kind} {a} {b}', not 'consistency {old.tree_size} "
                f"{cp.tree_size}' between the two checkpoints")
        tlog.verify_consistency(old.tree_size, cp.tree_size, proof, old.root_hash, cp.root_hash)
        result["since"] = _checkpoint_json(old)
    if args.json:
        _print_json(result)
    elif args.since is not None:
        print(f"ok: {cp.origin} {cp.tree_size} {cp.root_hash.hex()} extends "
              f"{args.since} ({old.tree_size} records)")
    else:
        print(f"ok: {cp.origin} {cp.tree_size} {cp.root_hash.hex()}")
    return 0


def add_parsers(sub: Any, stream_id: Callable[[str], int], non_negative: Callable[[str], int],
                positive: Callable[[str], int]) -> None:
    """Register the subcommands on cli.build_parser's subparsers."""
    p = sub.add_parser("keygen", help="make a signer key file and print the verifier key",
                       description=cmd_keygen.__doc__)
    p.add_argument("name", metavar="NAME", help="key name, e.g. example.com/audit")
    p.add_argument("--out", metavar="FILE", help="signer key file (default NAME.key)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("checkpoint", help="sign and store a stream's checkpoint",
                       description=cmd_checkpoint.__doc__)
    p.add_argument("dir", metavar="DIR", help="data directory")
    p.add_argument("stream", metavar="STREAM", type=stream_id, help="stream id")
    p.add_argument("--key", metavar="FILE", required=True, help="signer key file (keygen)")
    p.add_argument("--origin", metavar="O", help="origin line (default KEYNAME/STREAM)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("prove", help="print an inclusion proof", description=cmd_prove.__doc__)
    p.add_argument("dir", metavar="DIR", help="data directory")
    p.add_argument("stream", metavar="STREAM", type=stream_id, help="stream id")
    p.add_argument("offset", metavar="OFFSET", type=non_negative, help="record offset")
    p.add_argument("--size", type=positive, metavar="N", help="tree size (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("consistency", help="print a consistency proof",
                       description=cmd_consistency.__doc__)
    p.add_argument("dir", metavar="DIR", help="data directory")
    p.add_argument("stream", metavar="STREAM", type=stream_id, help="stream id")
    p.add_argument("old", metavar="OLD", type=positive, help="old tree size")
    p.add_argument("new", metavar="NEW", type=positive, nargs="?", help="new tree size")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("export-tiles", help="write a static tlog-tiles directory",
                       description=cmd_export_tiles.__doc__)
    p.add_argument("dir", metavar="DIR", help="data directory")
    p.add_argument("stream", metavar="STREAM", type=stream_id, help="stream id")
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--note", metavar="FILE", help="checkpoint note (default: the latest)")
    p.add_argument("--vkey", metavar="KEY", help="verifier key or key file, with --note")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_export_tiles)

    p = sub.add_parser("verify-checkpoint", help="check a checkpoint note (and its growth)",
                       description=cmd_verify_checkpoint.__doc__)
    p.add_argument("note", metavar="NOTE", help="checkpoint note file")
    p.add_argument("--vkey", metavar="KEY", required=True, help="verifier key or key file")
    p.add_argument("--origin", metavar="O", help="require this origin")
    p.add_argument("--since", metavar="OLDNOTE", help="an older checkpoint note file")
    p.add_argument("--proof", metavar="FILE", help="consistency proof file (consistency)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_verify_checkpoint)
