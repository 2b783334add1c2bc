"""The ``kimberlite`` command line (also ``python -m kimberlite``, whose ``__main__`` only
calls :func:`main`).

One function per subcommand (``cmd_<name>``), registered in ``build_parser``; ``main`` parses
and dispatches. Subcommands:

    demo [DIR]                      append events to two streams, read them back, verify,
                                    and explain (a fresh temporary directory by default)
    info DIR                        streams, events, segments, bytes and head hashes
    append DIR STREAM [FILE|-]      append one event per input line (--raw: the whole
                                    input as one event; --max-event-size N)
    read DIR STREAM                 print events (--from N, --max-bytes N,
                                    --format raw|hex|json)
    verify DIR [STREAM ...]         check every CRC and chain link from genesis
                                    (--expected-head HEX: against a trusted head)
    repair DIR STREAM               cut a damaged stream back to its last valid record
                                    (the rest is moved into quarantine files)
    keygen, checkpoint, prove, consistency, verify-checkpoint
                                    the verifiable log (kimberlite/_cli_tlog.py)

``info``, ``append``, ``read``, ``verify`` and ``repair`` take ``--json``. ``info``, ``read`` and
``verify`` open the directory read-only (no lock: they run beside a live writer); ``append``
and ``repair`` are writers. Exit status: 0 success, 1 a failed verification, corruption or another storage
or I/O error, 2 a usage error. Expected errors print one line on stderr, never a traceback;
recovery actions are logged on stderr as ``kimberlite: warning: ...``. A reader that goes
away (``kimberlite read ... | head``) is a normal end: the command stops quietly with 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, TextIO

import kimberlite
from kimberlite import _core
from kimberlite._words import plural as _plural

_MAX_STREAM_ID = (1 << 64) - 1
_PROGRESS_AFTER = 0.25  # seconds of verification before a progress bar appears
_PROGRESS_EVERY = 0.1   # seconds between redraws


class CliError(Exception):
    """An expected error: print ``kimberlite: error: <message>`` and exit with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ---- argument types -----------------------------------------------------------------------

def _stream_id(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid stream id {text!r}: not an integer") from None
    if not 0 <= value <= _MAX_STREAM_ID:
        raise argparse.ArgumentTypeError(f"invalid stream id {text!r}: must be in "
                                         f"[0, 2**64 - 1]")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must not be negative")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be positive")
    return value


def _head_hash(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise argparse.ArgumentTypeError(f"invalid head hash {text!r}: expected 64 hex digits "
                                         f"(a SHA-256 hash, as printed by info or verify)")
    return value


def _hex(h: Optional[bytes]) -> Optional[str]:
    return h.hex() if h is not None else None


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _open_reader(data_dir: str) -> kimberlite.Storage:
    if not os.path.isdir(data_dir):
        raise CliError(f"{data_dir}: no such data directory")
    return kimberlite.Storage(data_dir, read_only=True)


def _segment_bytes(data_dir: str, stream_id: int) -> int:
    """Total size of a stream's segment files (quarantine files and indexes excluded)."""
    total = 0
    try:
        with os.scandir(os.path.join(data_dir, str(stream_id))) as it:
            for entry in it:
                if _core.parse_segment_file_name(entry.name) is not None:  # the engine's naming
                    total += entry.stat().st_size
    except FileNotFoundError:
        pass
    return total


def _print_stream(s: kimberlite.Storage, stream_id: int) -> None:
    records = s.read_records(stream_id)
    print(f"  stream {stream_id}: {_plural(len(records), 'record')}, "
          f"{_plural(s.segment_count(stream_id), 'segment')}, "
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
            print(f"  stream {sid}: {_plural(count, 'record')}, head hash "
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


# ---- info -----------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    """Show the streams of a data directory: events, segments, bytes and head hashes."""
    rows: List[Dict[str, Any]] = []
    failed = False
    with _open_reader(args.dir) as s:
        for sid in s.streams():
            row: Dict[str, Any] = {"stream": sid}
            try:
                row["events"] = s.next_offset(sid)
                row["segments"] = s.segment_count(sid)
                row["bytes"] = _segment_bytes(args.dir, sid)
                row["head"] = _hex(s.latest_chain_hash(sid))
            except kimberlite.StorageError as e:
                row["error"] = str(e)
                failed = True
            rows.append(row)
    totals = {k: sum(r.get(k, 0) for r in rows) for k in ("events", "segments", "bytes")}
    if args.json:
        _print_json({"path": args.dir, "streams": rows, **totals})
        return 1 if failed else 0
    print(f"{args.dir}: {_plural(len(rows), 'stream')}, {_plural(totals['events'], 'event')}, "
          f"{_plural(totals['segments'], 'segment')}, {_plural(totals['bytes'], 'byte')}")
    if rows:
        print(f"{'stream':>20}  {'events':>10}  {'segments':>8}  {'bytes':>12}  head")
    for r in rows:
        if "error" in r:
            print(f"{r['stream']:>20}  error: {r['error']}")
        else:
            print(f"{r['stream']:>20}  {r['events']:>10}  {r['segments']:>8}  {r['bytes']:>12}  "
                  f"{r['head'] or '-'}")
    return 1 if failed else 0


# ---- append ---------------------------------------------------------------------------------

def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {name}: {e.strerror}", status=2) from None


def cmd_append(args: argparse.Namespace) -> int:
    """Append events to a stream: one per input line (without its newline), or --raw: the
    whole input as one event. The events are one batch: all are appended, or none."""
    data = _read_input(args.input)
    if args.raw:
        events = [data]
    else:
        events = data.split(b"\n")
        if events[-1] == b"":
            events.pop()
        if not events:
            raise CliError("the input holds no events (an empty input: use --raw to append "
                           "one empty event)", status=2)
    options: Dict[str, Any] = {}
    if args.max_event_size is not None:
        options["max_event_size"] = args.max_event_size
    with kimberlite.Storage(args.dir, **options) as s:
        try:
            next_offset = s.append_batch(args.stream, events, expected_offset=args.expected_offset,
                                         fsync=not args.no_fsync)
        except ValueError as e:  # an event larger than max_event_size
            raise CliError(f"{e} (here: --max-event-size BYTES; the limit is "
                           f"{s.max_event_size} bytes now)") from None
        head = s.latest_chain_hash(args.stream)
    if args.json:
        _print_json({"stream": args.stream, "appended": len(events), "next_offset": next_offset,
                     "head": _hex(head)})
    else:
        print(f"appended {_plural(len(events), 'event')} to stream "
              f"{args.stream}: next offset {next_offset}, head {_hex(head)}")
    return 0


# ---- read -----------------------------------------------------------------------------------

def _limited(it: Iterator[Any], max_bytes: Optional[int], size: Callable[[Any], int]) -> Iterator[Any]:
    """read_from's max_bytes rule: stop once the payloads yielded reach max_bytes (the event
    that crosses the limit included)."""
    if max_bytes is None:
        yield from it
        return
    total = 0
    for item in it:
        if total >= max_bytes:
            return
        total += size(item)
        yield item


def cmd_read(args: argparse.Namespace) -> int:
    """Print a stream's events from --from (default 0): raw (each followed by a newline),
    hex (one per line) or json (one object per line: offset, size, hash, payload as text
    when it is UTF-8, payload_hex)."""
    fmt = "json" if args.json else args.format
    out: BinaryIO = sys.stdout.buffer
    with _open_reader(args.dir) as s:
        if args.stream not in s.streams():
            raise CliError(f"{args.dir}: no stream {args.stream}")
        if fmt == "json":
            for r in _limited(s.iter_from(args.stream, args.from_offset, records=True),
                              args.max_bytes, lambda r: len(r.payload)):
                try:
                    text: Optional[str] = r.payload.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                line = json.dumps({"offset": r.offset, "size": len(r.payload),
                                   "hash": r.compute_hash().hex(), "payload": text,
                                   "payload_hex": r.payload.hex()})
                out.write(line.encode() + b"\n")
        else:
            for ev in _limited(s.iter_from(args.stream, args.from_offset), args.max_bytes, len):
                out.write((ev.hex().encode() if fmt == "hex" else ev) + b"\n")
    out.flush()
    return 0


# ---- verify ---------------------------------------------------------------------------------

def _io_read_bytes() -> Optional[int]:
    """Bytes this process has read so far (Linux /proc/self/io "rchar"), or None."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Progress:
    """A carriage-return progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, stream: TextIO, label: str, total: int) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.drawn = False

    def draw(self, done: Optional[int], elapsed: float) -> None:
        width = 30
        if done is not None and self.total > 0:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * width)
            text = (f"\r{self.label} [{bar:<{width}}] {frac * 100:5.1f}% "
                    f"{done / 2**20:,.1f}/{self.total / 2**20:,.1f} MiB {elapsed:5.1f}s")
        else:
            text = f"\r{self.label} {elapsed:5.1f}s"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _verify_one(s: kimberlite.Storage, sid: int, expected: Optional[bytes], total: int,
                progress: Optional[float]) -> Any:
    """s.verify(sid, expected) in a worker thread (the engine releases the GIL), drawing a
    progress bar after ``progress`` seconds (None: no bar); returns the result or raises
    what verify raised. Progress is the bytes the process has read (/proc/self/io) against
    the size of the stream's segments; elsewhere the bar shows the elapsed time only."""
    result: Dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = s.verify(sid, expected_head=expected)
        except BaseException as e:  # handed to the main thread
            result["error"] = e

    if progress is None:
        work()
    else:
        start = time.monotonic()
        base = _io_read_bytes()
        bar = _Progress(sys.stderr, f"verify stream {sid}", total)
        worker = threading.Thread(target=work, name=f"kimberlite-verify-{sid}", daemon=True)
        worker.start()
        try:
            if progress <= 0:
                bar.draw(0, 0.0)
            while True:
                worker.join(_PROGRESS_EVERY)
                if not worker.is_alive():
                    break
                elapsed = time.monotonic() - start
                if elapsed >= progress:
                    now = _io_read_bytes()
                    bar.draw(now - base if now is not None and base is not None else None,
                             elapsed)
        finally:
            bar.clear()
    if "error" in result:
        raise result["error"]
    return result["value"]


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify streams from genesis (every CRC, offset and chain link), all of them by
    default; --expected-head checks the single stream named against a trusted head hash.
    Exit status 1 if any stream fails."""
    if args.expected_head is not None and len(args.streams) != 1:
        raise CliError("--expected-head needs exactly one STREAM", status=2)
    progress: Optional[float] = None
    if args.progress:
        progress = 0.0
    elif not args.no_progress and sys.stderr.isatty():
        progress = _PROGRESS_AFTER
    results: List[Dict[str, Any]] = []
    with _open_reader(args.dir) as s:
        existing = s.streams()
        for sid in args.streams or existing:
            row: Dict[str, Any] = {"stream": sid}
            try:
                if sid not in existing and args.expected_head is None:
                    raise kimberlite.StorageError(f"no stream {sid} in {args.dir}")
                total = _segment_bytes(args.dir, sid)
                count, head = _verify_one(s, sid, args.expected_head, total, progress)
                row.update(ok=True, events=count, head=_hex(head))
            except kimberlite.StorageError as e:
                row.update(ok=False, error=str(e), kind=type(e).__name__)
            results.append(row)
    failed = [r for r in results if not r["ok"]]
    if args.json:
        _print_json({"path": args.dir, "ok": not failed, "streams": results})
    else:
        for r in results:
            if r["ok"]:
                print(f"stream {r['stream']}: ok, {_plural(r['events'], 'event')}, "
                      f"head {r['head'] or '-'}")
            else:
                print(f"stream {r['stream']}: FAILED: {r['kind']}: {r['error']}")
        print(f"{_plural(len(results), 'stream')} verified: "
              f"{len(results) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Cut a damaged stream back to its last valid record: everything after it (the rest of
    its segment, and every later segment) is moved into quarantine files beside the
    segments; nothing is deleted. Only when asked: reads and appends never cut damage.
    Needs the writer's lock (no other process may have the directory open for writing)."""
    if not os.path.isdir(args.dir):
        raise CliError(f"{args.dir}: no such data directory")
    with kimberlite.Storage(args.dir) as s:
        if args.stream not in s.streams():
            raise CliError(f"no stream {args.stream} in {args.dir}")
        report = s.repair(args.stream)
    if args.json:
        _print_json({"stream_id": report.stream_id, "next_offset": report.next_offset,
                     "quarantined": [[name, size] for name, size in report.quarantined],
                     "bytes_moved": report.bytes_moved})
        return 0
    for name, size in report.quarantined:
        print(f"moved {_plural(size, 'byte')} to {name}")
    if report.quarantined:
        print(f"stream {report.stream_id}: repaired: {_plural(report.bytes_moved, 'byte')} "
              f"moved into {_plural(len(report.quarantined), 'quarantine file')}; "
              f"{_plural(report.next_offset, 'event')} kept")
    else:
        print(f"stream {report.stream_id}: nothing to repair, "
              f"{_plural(report.next_offset, 'event')}")
    return 0


# ---- parser and main ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subparser per subcommand, each with ``func`` set."""
    parser = argparse.ArgumentParser(
        prog="kimberlite",
        description="Kimberlite: an embedded, append-only, tamper-evident event log.",
        epilog="Exit status: 0 success, 1 failed verification, corruption or I/O error, "
               "2 usage error.",
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s ({kimberlite._distribution.DISTRIBUTION}) {kimberlite.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="append, read back and verify a few events",
                          description=cmd_demo.__doc__)
    demo.add_argument("dir", nargs="?", metavar="DIR",
                      help="data directory to use (default: a fresh temporary directory)")
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="streams, events, segments, bytes and head hashes",
                          description=cmd_info.__doc__)
    info.add_argument("dir", metavar="DIR", help="data directory")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    append = sub.add_parser("append", help="append events (one per line) to a stream",
                            description=cmd_append.__doc__)
    append.add_argument("dir", metavar="DIR", help="data directory (created if missing)")
    append.add_argument("stream", metavar="STREAM", type=_stream_id, help="stream id")
    append.add_argument("input", metavar="FILE", nargs="?", default="-",
                        help="input file, or - for standard input (the default)")
    append.add_argument("--raw", action="store_true",
                        help="append the whole input as one event")
    append.add_argument("--expected-offset", type=_non_negative, metavar="N",
                        help="fail unless the stream's next offset is N")
    append.add_argument("--no-fsync", action="store_true",
                        help="do not sync to stable storage before returning")
    append.add_argument("--max-event-size", type=_positive, metavar="BYTES",
                        help="largest event accepted (default "
                             f"{_core.DEFAULT_MAX_EVENT_SIZE} bytes)")
    append.add_argument("--json", action="store_true", help="print JSON")
    append.set_defaults(func=cmd_append)

    read = sub.add_parser("read", help="print a stream's events", description=cmd_read.__doc__)
    read.add_argument("dir", metavar="DIR", help="data directory")
    read.add_argument("stream", metavar="STREAM", type=_stream_id, help="stream id")
    read.add_argument("--from", dest="from_offset", type=_non_negative, default=0, metavar="N",
                      help="first offset to print (default 0)")
    read.add_argument("--max-bytes", type=_non_negative, metavar="N",
                      help="stop once N payload bytes are printed (the event crossing the "
                           "limit included)")
    read.add_argument("--format", choices=("raw", "hex", "json"), default="raw",
                      help="output format (default raw)")
    read.add_argument("--json", action="store_true", help="same as --format json")
    read.set_defaults(func=cmd_read)

    verify = sub.add_parser("verify", help="verify streams from genesis",
                            description=cmd_verify.__doc__)
    verify.add_argument("dir", metavar="DIR", help="data directory")
    verify.add_argument("streams", metavar="STREAM", type=_stream_id, nargs="*",
                        help="streams to verify (default: all)")
    verify.add_argument("--expected-head", type=_head_hash, metavar="HEX",
                        help="trusted head hash of the (single) stream, 64 hex digits")
    bar = verify.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true",
                     help="always show a progress bar on stderr, from the start")
    bar.add_argument("--no-progress", action="store_true",
                     help="never show one (by default it appears on a terminal when a "
                          "stream takes more than a moment)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(func=cmd_verify)

    repair = sub.add_parser("repair", help="cut a damaged stream back to its last valid record",
                            description=cmd_repair.__doc__)
    repair.add_argument("dir", metavar="DIR", help="data directory")
    repair.add_argument("stream", metavar="STREAM", type=_stream_id, help="stream id")
    repair.add_argument("--json", action="store_true", help="print JSON")
    repair.set_defaults(func=cmd_repair)
    from kimberlite import _cli_tlog  # keygen, checkpoint, prove, consistency, verify-checkpoint
    _cli_tlog.add_parsers(sub, _stream_id, _non_negative, _positive)
    return parser


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
    # argparse leaves an optional positional after an option unparsed ("append DIR 1 --raw
    # FILE"): take it as what it is.
    if (extra and getattr(args, "command", None) == "append" and args.input == "-"
            and len(extra) == 1 and not extra[0].startswith("-")):
        args.input = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Optional[Command] = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(format="kimberlite: warning: %(message)s")
    try:
        status = func(args)
        sys.stdout.flush()  # inside the try: a reader gone by now is a normal end too
        return status
    except CliError as e:
        print(f"kimberlite: error: {e}", file=sys.stderr)
        return e.status
    except kimberlite.StorageError as e:
        print(f"kimberlite: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``kimberlite read ... | head``): a normal end, so exit 0.
        # As the Python docs advise (signal module, "Note on SIGPIPE"), point stdout at
        # devnull, so that the interpreter's final flush cannot fail again at exit.
        _quiet_stdout()
        return 0
    except OSError as e:
        print(f"kimberlite: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kimberlite: interrupted", file=sys.stderr)
        return 130
