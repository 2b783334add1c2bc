"""The ``kimberlite`` command line (also ``python -m kimberlite``).

One function per subcommand (``cmd_<name>``), registered in ``build_parser``; ``main`` parses
and dispatches. Subcommands:

    demo [DIR]   append events to two streams, read them back, verify, and explain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

import kimberlite


def _print_stream(s: kimberlite.Storage, stream_id: int) -> None:
    records = s.read_records(stream_id)
    print(f"  stream {stream_id}: {len(records)} records, "
          f"{s.segment_count(stream_id)} segment(s), "
          f"sealed: {s.completed_segments(stream_id) or 'none'}")
    for r in records:
        prev = r.prev_hash.hex()[:16] + "..." if r.prev_hash is not None else "(genesis)"
        print(f"    offset {r.offset:>3}  prev_hash {prev:<19}  payload {r.payload!r}")


def _demo(data_dir: str) -> int:
    print(f"kimberlite {kimberlite.__version__}: demo in {data_dir}")
    # A small segment size, so that the demo shows rotation.
    with kimberlite.Storage(data_dir, max_segment_size=256) as s:
        base = {sid: s.next_offset(sid) for sid in (1, 2)}
        if any(base.values()):
            print(f"  (the directory already holds events: next offsets {base})")
        n1 = s.append_batch(1, [b"account opened", b"deposit 100", b"withdraw 30"])
        print(f"appended 3 events to stream 1: next offset is now {n1}")
        n2 = s.append_batch(2, [f"sensor reading {i}".encode() for i in range(6)])
        print(f"appended 6 events to stream 2: next offset is now {n2}")
        n1 = s.append_batch(1, [b"deposit 5"], expected_offset=n1)
        print(f"appended 1 event to stream 1 with expected_offset: next offset is now {n1}")

        print("read back:")
        for sid in (1, 2):
            _print_stream(s, sid)

        print("verify (every CRC and chain link from genesis):")
        heads = {}
        for sid in s.streams():
            count, head = s.verify(sid)
            heads[sid] = head
            print(f"  stream {sid}: {count} records, head hash "
                  f"{head.hex() if head is not None else None}")
        print("  keep a head hash somewhere safe: verify(stream, expected_head=head) then "
              "detects any change to the stream")
        for sid, head in heads.items():
            s.verify(sid, expected_head=head)
        print(f"streams: {s.streams()}")
    print(f"closed; the files are in {data_dir}:")
    for entry in sorted(os.listdir(data_dir)):
        sub = os.path.join(data_dir, entry)
        if os.path.isdir(sub):
            for name in sorted(os.listdir(sub)):
                size = os.path.getsize(os.path.join(sub, name))
                print(f"  {entry}/{name}  ({size} bytes)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Append events to two streams, read them back, verify, print what happened."""
    if args.dir is not None:
        return _demo(args.dir)
    with tempfile.TemporaryDirectory(prefix="kimberlite-demo-") as tmp:
        return _demo(tmp)


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subparser per subcommand, each with ``func`` set."""
    parser = argparse.ArgumentParser(
        prog="kimberlite",
        description="Kimberlite: an embedded, append-only, tamper-evident event log.",
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {kimberlite.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="append, read back and verify a few events",
                          description=cmd_demo.__doc__)
    demo.add_argument("dir", nargs="?", metavar="DIR",
                      help="data directory to use (default: a fresh temporary directory)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func: Optional[Command] = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except kimberlite.StorageError as e:
        print(f"kimberlite: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
