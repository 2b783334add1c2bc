"""The verifiable-log CLI round trip (keygen → checkpoint → prove / consistency → verify on a
machine holding only the verifier key and the proof), through real subprocesses."""
import json
import os
import stat

import kimberlite as km
from kimberlite import tlog

from test_cli import one_error_line, run


def setup_log(tmp_path, n=5):
    with km.Storage(tmp_path / "d", max_segment_size=200) as s:
        s.append_batch(7, [b"e%d" % i for i in range(n)])


def test_round_trip(tmp_path):
    setup_log(tmp_path, 3)
    rc, vkey, err = run("keygen", "example.com/audit", cwd=tmp_path)
    assert rc == 0, err
    vkey = vkey.strip()
    keyfile = tmp_path / "example.com_audit.key"
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert keyfile.read_text().startswith("PRIVATE+KEY+example.com/audit+")
    assert tlog.Signer(keyfile.read_text().strip()).verifier_key == vkey

    rc, note1, err = run("checkpoint", tmp_path / "d", 7, "--key", keyfile)
    assert rc == 0, err
    (tmp_path / "cp1").write_text(note1)
    cp1 = tlog.open_checkpoint(note1.encode(), vkey, origin="example.com/audit/7")
    assert cp1.tree_size == 3

    with km.Storage(tmp_path / "d") as s:
        s.append_batch(7, [b"e3", b"e4"])
        leaf = tlog.record_leaf_hash(s.read_records(7, 1)[0].prev_hash, b"e1")
    rc, note2, err = run("checkpoint", tmp_path / "d", 7, "--key", keyfile)
    assert rc == 0, err
    (tmp_path / "cp2").write_text(note2)
    cp2 = tlog.open_checkpoint(note2.encode(), vkey)

    rc, proof, err = run("consistency", tmp_path / "d", 7, 3)
    assert rc == 0, err
    assert proof.splitlines()[0] == "consistency 3 5"
    (tmp_path / "proof").write_text(proof)
    (tmp_path / "vkey").write_text(vkey + "\n")

    # the auditor: only notes, the verifier key and the proof; no data directory
    audit = tmp_path / "auditor"
    audit.mkdir()
    rc, out, err = run("verify-checkpoint", tmp_path / "cp2", "--vkey", tmp_path / "vkey",
                       "--since", tmp_path / "cp1", "--proof", tmp_path / "proof", cwd=audit)
    assert rc == 0, err
    assert out.startswith("ok: example.com/audit/7 5 " + cp2.root_hash.hex())

    rc, out, err = run("prove", tmp_path / "d", 7, 1, "--size", 3, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["type"] == "inclusion" and (data["index"], data["tree_size"]) == (1, 3)
    tlog.verify_inclusion(leaf, 1, 3, [bytes.fromhex(h) for h in data["proof"]], cp1.root_hash)
    rc, text, err = run("prove", tmp_path / "d", 7, 1, "--size", 3)
    assert tlog._parse_proof(text)[3] == [bytes.fromhex(h) for h in data["proof"]]


def test_verify_checkpoint_rejects(tmp_path):
    setup_log(tmp_path)
    skey, vkey = tlog.generate_key("a.example")
    _, other = tlog.generate_key("a.example")
    with km.Storage(tmp_path / "d") as s:
        cp1 = s.checkpoint(7, tlog.Signer(skey))
        s.append_batch(7, [b"more"])
        cp2 = s.checkpoint(7, tlog.Signer(skey))
        proof = tlog._format_proof("consistency", 5, 6, s.consistency_proof(7, 5))
    (tmp_path / "cp1").write_bytes(cp1.note)
    (tmp_path / "cp2").write_bytes(cp2.note)
    (tmp_path / "proof").write_text(proof)
    rc, out, err = run("verify-checkpoint", tmp_path / "cp2", "--vkey", other)
    assert rc == 1 and "signature" in one_error_line(err).lower()
    bad = tmp_path / "bad"
    bad.write_bytes(cp2.note.replace(b"\n6\n", b"\n7\n"))
    rc, out, err = run("verify-checkpoint", bad, "--vkey", vkey)
    assert rc == 1
    one_error_line(err)
    lines = proof.splitlines()
    lines[1] = "0" * 64
    (tmp_path / "badproof").write_text("\n".join(lines) + "\n")
    rc, out, err = run("verify-checkpoint", tmp_path / "cp2", "--vkey", vkey, "--since",
                       tmp_path / "cp1", "--proof", tmp_path / "badproof")
    assert rc == 1
    one_error_line(err)
    rc, out, err = run("verify-checkpoint", tmp_path / "cp2", "--vkey", vkey, "--since",
                       tmp_path / "cp1")
    assert rc == 1 and "together" in one_error_line(err)
    rc, out, err = run("verify-checkpoint", tmp_path / "cp2", "--vkey", vkey, "--json")
    assert rc == 0 and json.loads(out)["tree_size"] == 6


def test_errors_are_one_line(tmp_path):
    setup_log(tmp_path)
    rc, out, err = run("prove", tmp_path / "d", 7, 5)
    assert rc == 1 and "not below" in one_error_line(err)
    rc, out, err = run("consistency", tmp_path / "d", 7, 6)
    assert rc == 1
    one_error_line(err)
    rc, out, err = run("prove", tmp_path / "nowhere", 7, 0)
    assert rc == 1 and "no such data directory" in one_error_line(err)
    (tmp_path / "k").write_text("PRIVATE+KEY+bad\n")
    rc, out, err = run("checkpoint", tmp_path / "d", 7, "--key", tmp_path / "k")
    assert rc == 1
    one_error_line(err)
    rc, out, err = run("checkpoint", tmp_path / "d", 7, "--key", tmp_path / "missing")
    assert rc == 1 and "cannot read" in one_error_line(err)
    rc, out, err = run("keygen", "bad name", cwd=tmp_path)
    assert rc == 1
    one_error_line(err)
    rc, out, err = run("keygen", "n", "--out", tmp_path / "k")
    assert rc == 1 and "never overwritten" in one_error_line(err)
    assert (tmp_path / "k").read_text() == "PRIVATE+KEY+bad\n"


def test_checkpoint_mismatch_from_the_cli(tmp_path):
    from kimberlite.testing import replace_payload
    setup_log(tmp_path)
    rc, _, err = run("keygen", "k.example", "--out", tmp_path / "key")
    assert rc == 0, err
    rc, _, err = run("checkpoint", tmp_path / "d", 7, "--key", tmp_path / "key", "--json")
    assert rc == 0, err
    replace_payload(tmp_path / "d", 7, 4, b"forged")
    rc, out, err = run("checkpoint", tmp_path / "d", 7, "--key", tmp_path / "key")
    assert rc == 1 and "rewritten" in one_error_line(err)


def test_export_tiles_command(tmp_path):
    from test_tlog_tiles import TileClient
    setup_log(tmp_path)
    skey, vkey = tlog.generate_key("t.example")
    rc, out, err = run("export-tiles", tmp_path / "d", 7, tmp_path / "out")
    assert rc == 1 and "no checkpoint" in one_error_line(err)
    with km.Storage(tmp_path / "d") as s:
        cp = s.checkpoint(7, tlog.Signer(skey))
        s.append_batch(7, [b"later"])
    rc, out, err = run("export-tiles", tmp_path / "d", 7, tmp_path / "out")
    assert rc == 0, err
    c = TileClient(tmp_path / "out", vkey)
    assert c.cp == cp and len(c.leaves()) == 5
    (tmp_path / "note").write_bytes(cp.note)
    rc, out, err = run("export-tiles", tmp_path / "d", 7, tmp_path / "o2", "--note",
                       tmp_path / "note", "--vkey", vkey, "--json")
    assert rc == 0, err
    assert json.loads(out)["tree_size"] == 5
    rc, out, err = run("export-tiles", tmp_path / "d", 7, tmp_path / "o3", "--note",
                       tmp_path / "note")
    assert rc == 1 and "--vkey" in one_error_line(err)
