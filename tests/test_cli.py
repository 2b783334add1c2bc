"""The command line, through real subprocesses: python -m kimberlite ... (and the installed
`kimberlite` script when there is one). Exit status 0 / 1 (failed verification, corruption,
storage errors) / 2 (usage); expected errors are one line on stderr, never a traceback."""
import json
import os
import pty
import shutil
import subprocess
import sys

import pytest

import kimberlite as km
import kimberlite.testing as kt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(*args, input=None, cwd=None):
    p = subprocess.run([sys.executable, "-m", "kimberlite", *map(str, args)], input=input,
                       capture_output=True, env=ENV, cwd=cwd, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def one_error_line(err):
    """The one error line on stderr (recovery warnings, one line each, may come first)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("kimberlite: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("kimberlite: error: "), err
    return errors[0]


@pytest.fixture
def store(tmp_path):
    data = tmp_path / "data"
    with km.Storage(data, max_segment_size=300) as s:
        s.append_batch(1, [b"event1", b"event2"])
        s.append_batch(2, [f"reading {i}".encode() for i in range(20)])
    return data


# ---- demo ---------------------------------------------------------------------------------

def test_demo_default_directory():
    rc, out, err = run("demo")
    assert rc == 0, err
    assert "verify" in out and "appended 3 events to stream 1" in out
    assert "segment_000000.log" in out


def test_demo_in_a_directory(tmp_path):
    rc, out, _ = run("demo", tmp_path / "d")
    assert rc == 0
    assert (tmp_path / "d" / "1" / "segment_000000.log").exists()


def test_console_script_and_help():
    rc, out, _ = run("--help")
    assert rc == 0
    for cmd in ("demo", "info", "append", "read", "verify"):
        assert cmd in out
    rc, out, _ = run("--version")
    assert rc == 0 and km.__version__ in out
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'kimberlite = "kimberlite.cli:main"' in f.read()
    script = shutil.which("kimberlite")
    if script is not None:  # installed (pip install -e .): the script works the same
        p = subprocess.run([script, "--version"], capture_output=True, text=True, env=ENV)
        assert p.returncode == 0 and km.__version__ in p.stdout


# ---- info ---------------------------------------------------------------------------------

def test_info(store):
    rc, out, err = run("info", store)
    assert rc == 0, err
    assert "2 streams, 22 events" in out
    with km.Storage(store, read_only=True) as s:
        assert s.latest_chain_hash(1).hex() in out
        assert s.latest_chain_hash(2).hex() in out
    rc, out, _ = run("info", store, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["events"] == 22
    rows = {r["stream"]: r for r in doc["streams"]}
    assert rows[1]["events"] == 2 and rows[1]["segments"] == 1 and rows[1]["bytes"] == 108
    assert rows[1]["head"] == "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"
    assert rows[2]["events"] == 20 and rows[2]["segments"] == 2  # rotated after the batch


def test_info_missing_directory(tmp_path):
    rc, _, err = run("info", tmp_path / "nope")
    assert rc == 1
    assert "no such data directory" in one_error_line(err)


# ---- append -------------------------------------------------------------------------------

def test_append_lines_from_stdin_and_file(tmp_path):
    data = tmp_path / "data"
    rc, out, err = run("append", data, 7, input=b"one\ntwo\n\nthree")
    assert rc == 0, err
    assert "appended 4 events to stream 7: next offset 4" in out
    f = tmp_path / "in.txt"
    f.write_bytes(b"four\n")
    rc, out, _ = run("append", data, 7, f, "--expected-offset", 4, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["appended"] == 1 and doc["next_offset"] == 5
    with km.Storage(data, read_only=True) as s:
        assert s.read_from(7) == [b"one", b"two", b"", b"three", b"four"]
        assert doc["head"] == s.latest_chain_hash(7).hex()


def test_append_raw(tmp_path):
    data = tmp_path / "data"
    blob = bytes(range(256)) * 3 + b"\n\n"
    rc, _, err = run("append", data, 1, "--raw", input=blob)
    assert rc == 0, err
    f = tmp_path / "blob"
    f.write_bytes(b"")
    rc, _, err = run("append", data, 1, "--raw", f)  # option before the file
    assert rc == 0, err
    with km.Storage(data, read_only=True) as s:
        assert s.read_from(1) == [blob, b""]


def test_append_errors(tmp_path):
    data = tmp_path / "data"
    rc, _, err = run("append", data, 1, input=b"")
    assert rc == 2 and "no events" in one_error_line(err)
    rc, _, err = run("append", data, 1, tmp_path / "missing.txt")
    assert rc == 2 and "cannot read" in one_error_line(err)
    run("append", data, 1, input=b"a\n")
    rc, _, err = run("append", data, 1, "--expected-offset", 0, input=b"b\n")
    assert rc == 1
    assert "OffsetMismatch" in err or "expected" in one_error_line(err)
    rc, _, err = run("append", data, "x", input=b"a\n")
    assert rc == 2 and "invalid stream id" in err and "Traceback" not in err
    rc, _, err = run("append", data, 2**64, input=b"a\n")
    assert rc == 2 and "invalid stream id" in err


def test_append_while_another_writer_holds_the_directory(tmp_path):
    data = tmp_path / "data"
    with km.Storage(data):
        rc, _, err = run("append", data, 1, input=b"x\n")
    assert rc == 1
    one_error_line(err)


# ---- read ---------------------------------------------------------------------------------

def test_read_formats(store):
    rc, out, err = run("read", store, 1)
    assert rc == 0, err
    assert out == "event1\nevent2\n"
    rc, out, _ = run("read", store, 1, "--format", "hex")
    assert out.split() == [b"event1".hex(), b"event2".hex()]
    rc, out, _ = run("read", store, 1, "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in rows] == [0, 1]
    assert rows[1]["payload"] == "event2" and rows[1]["payload_hex"] == b"event2".hex()
    assert rows[1]["hash"] == "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"
    rc, out2, _ = run("read", store, 1, "--json")
    assert out2 == out


def test_read_from_and_max_bytes(store):
    rc, out, _ = run("read", store, 2, "--from", 18)
    assert out == "reading 18\nreading 19\n"
    # read_from's rule: the event that crosses the limit is included
    rc, out, _ = run("read", store, 2, "--from", 3, "--max-bytes", 10)
    assert out == "reading 3\nreading 4\n"
    rc, out, _ = run("read", store, 2, "--max-bytes", 0)
    assert rc == 0 and out == ""
    rc, out, _ = run("read", store, 2, "--from", 100)
    assert rc == 0 and out == ""


def test_read_errors(store):
    rc, _, err = run("read", store, 9)
    assert rc == 1 and "no stream 9" in one_error_line(err)
    rc, _, err = run("read", store, 1, "--from", -1)
    assert rc == 2 and "must not be negative" in err
    rc, _, err = run("read", store, 1, "--format", "xml")
    assert rc == 2
    kt.flip_bit(store, 2, 3)
    rc, out, err = run("read", store, 2)
    assert rc == 1
    assert "corrupted record" in one_error_line(err).lower()
    assert set(out.splitlines()) <= {f"reading {i}" for i in range(3)}  # never altered data


# ---- verify -------------------------------------------------------------------------------

def test_verify_ok(store):
    rc, out, err = run("verify", store)
    assert rc == 0, err
    assert "2 streams verified: 2 ok, 0 failed" in out
    head = "c0351898aed9916debcc05905fb10161c329785aaa559dbc85fc1571516b6f6e"
    rc, out, _ = run("verify", store, 1, "--expected-head", head)
    assert rc == 0 and f"stream 1: ok, 2 events, head {head}" in out
    rc, out, _ = run("verify", store, 2, "--json")
    doc = json.loads(out)
    assert doc["ok"] is True and doc["streams"][0]["events"] == 20


def test_verify_failures(store):
    rc, out, err = run("verify", store, 1, "--expected-head", "00" * 32)
    assert rc == 1 and "stream 1: FAILED: ChainVerificationError" in out
    rc, out, _ = run("verify", store, 5)
    assert rc == 1 and "no stream 5" in out
    kt.replace_payload(store, 2, 4, b"forged")
    rc, out, _ = run("verify", store, "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    bad = [r for r in doc["streams"] if not r["ok"]]
    assert [r["stream"] for r in bad] == [2] and bad[0]["kind"] == "ChainVerificationError"


def test_verify_usage_errors(store):
    rc, _, err = run("verify", store, "--expected-head", "xyz")
    assert rc == 2 and "64 hex digits" in err and "Traceback" not in err
    rc, _, err = run("verify", store, 1, 2, "--expected-head", "00" * 32)
    assert rc == 2 and "exactly one STREAM" in one_error_line(err)
    rc, _, err = run()
    assert rc == 2
    rc, _, err = run("frobnicate")
    assert rc == 2 and "Traceback" not in err


def _run_on_a_tty(*args):
    """Run with stderr on a pseudo-terminal; return (status, stdout, what the tty got)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "kimberlite", *map(str, args)], stderr=slave,
                           stdout=subprocess.PIPE, env=ENV, timeout=60)
    finally:
        os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    return p.returncode, p.stdout.decode(), got.decode()


def test_verify_progress_bar(tmp_path):
    data = tmp_path / "big"
    with km.Storage(data) as s:
        for _ in range(8):
            s.append_batch(1, [b"p" * 65536] * 64, fsync=False)
    rc, out, tty = _run_on_a_tty("verify", data, "--progress")
    assert rc == 0 and "1 ok" in out
    assert "\rverify stream 1 [" in tty and "%" in tty and "MiB" in tty
    assert tty.endswith("\r\x1b[K")  # the bar is wiped before the result is printed
    # Off a terminal, or with --no-progress, no bar.
    rc, out, err = run("verify", data)
    assert rc == 0 and "\r" not in err
    rc, out, tty = _run_on_a_tty("verify", data, "--no-progress")
    assert rc == 0 and "\r" not in tty


def test_recovery_warnings_are_one_line_each(tmp_path):
    data = tmp_path / "data"
    with km.Storage(data) as s:
        s.append_batch(1, [b"a", b"b"])
    kt.tear_tail(data, 1)
    rc, out, err = run("append", data, 1, input=b"c\n")
    assert rc == 0
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("kimberlite: warning: ") for line in lines), err
    assert any("torn tail" in line for line in lines)


# ---- pipes, plurals, options ------------------------------------------------------------------

def _closed_pipe_run(args, reader="head -n 2"):
    """``python -m kimberlite ARGS | READER``; returns (status of kimberlite, its stderr,
    the reader's output)."""
    cmd = " ".join([sys.executable, "-m", "kimberlite", *map(str, args)])
    # PIPESTATUS is bash's: the status of kimberlite itself, not of the reader
    script = f"{cmd} 2>\"$ERR\" | {reader}; exit ${{PIPESTATUS[0]}}"
    err_file = os.path.join(os.path.dirname(str(args[1])), "stderr.txt")
    p = subprocess.run(["bash", "-c", script], capture_output=True, env=dict(ENV, ERR=err_file),
                       timeout=120)
    with open(err_file) as f:
        return p.returncode, f.read(), p.stdout.decode()


@pytest.mark.parametrize("fmt", ["raw", "hex", "json"])
def test_read_into_a_closed_pipe_is_a_normal_end(tmp_path, fmt):
    # kimberlite read ... | head: the reader leaves after two lines, the writer gets EPIPE
    data = tmp_path / "d"
    with km.Storage(data) as s:
        s.append_batch(1, [b"event %d" % i for i in range(200_000)], fsync=False)
    rc, err, out = _closed_pipe_run(["read", data, 1, "--format", fmt])
    assert rc == 0, err
    assert err == ""  # no traceback, no "Exception ignored" at exit
    assert len(out.splitlines()) == 2


def test_info_into_a_reader_that_reads_nothing(tmp_path):
    data = tmp_path / "d"
    with km.Storage(data) as s:
        for sid in range(1500):  # ~150 KB of output: more than a pipe holds
            s.append_batch(sid, [b"x"], fsync=False)
    rc, err, out = _closed_pipe_run(["info", data], reader="true")
    assert rc == 0, err
    assert err == ""


def test_counts_are_in_the_singular_for_one(tmp_path):
    data = tmp_path / "d"
    rc, out, _ = run("append", data, 1, "--raw", input=b"only")
    assert rc == 0 and "appended 1 event to stream 1" in out
    rc, out, _ = run("info", data)
    assert rc == 0
    assert "1 stream, 1 event, 1 segment," in out
    rc, out, _ = run("verify", data)
    assert rc == 0
    assert "stream 1: ok, 1 event, head" in out and "1 stream verified" in out
    rc, out, _ = run("append", data, 2, input=b"a\nb\n")
    assert "appended 2 events to stream 2" in out
    rc, out, _ = run("verify", data)
    assert "2 streams verified" in out
    rc, out, _ = run("demo", tmp_path / "demo")
    assert rc == 0
    assert "(s)" not in out
    for wrong in ("1 events", "1 records", "1 segments", "1 streams"):
        assert f" {wrong}" not in out


def test_append_max_event_size_option(tmp_path):
    data = tmp_path / "d"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 3000)
    rc, _, err = run("append", data, 1, "--raw", big, "--max-event-size", 1000)
    assert rc == 1
    line = one_error_line(err)
    # the message names what the command line offers, and nothing was written
    assert "--max-event-size" in line and "3000 bytes" in line
    with km.Storage(data, read_only=True) as s:
        assert s.next_offset(1) == 0
    rc, out, _ = run("append", data, 1, "--raw", big, "--max-event-size", 3000)
    assert rc == 0 and "appended 1 event" in out
    rc, _, err = run("append", data, 1, "--raw", big, "--max-event-size", 0)
    assert rc == 2 and "must be positive" in err


def test_python_m_kimberlite_and_cli_main_are_one_command(tmp_path, capsys):
    from kimberlite import cli

    assert cli.main(["append", str(tmp_path / "d"), "7", "--raw", os.devnull]) == 0
    assert "appended 1 event to stream 7" in capsys.readouterr().out
    rc, out, _ = run("info", tmp_path / "d")
    assert rc == 0 and "1 stream, 1 event" in out
