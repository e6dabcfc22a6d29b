"""The admin's queue commands: tern queue list (= mailq, postqueue -p
layout, --json = postqueue -j), show (postcat -q), delete / hold /
release / requeue (postsuper, IDs, ALL or "-" from stdin), shape
(qshape), tern delivery pause / resume / status, tern log (postlog) --
with ternd running (through the control socket) and stopped (on the
queue directly).
"""

import json
import os
import re
import subprocess
import time

from harness import run_tern, tern_bin, wait_for

HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"


def sendmail(cfg, rcpts, subject):
    env = dict(os.environ, TERN_CONFIG_DIR=str(cfg.path))
    p = subprocess.run([str(tern_bin("sendmail")), "-i", "-f", "alice@example.test",
                        *rcpts], input=("Subject: %s\n\nbody %s\n" % (subject, subject)).encode(),
                       capture_output=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr


def prepare(cfg):
    (cfg.path / "data").mkdir(exist_ok=True)
    cfg.queue_directory.mkdir(exist_ok=True)
    # Hermetic: no /etc/aliases; the control socket inside the test dir.
    cfg.set(data_directory=str(cfg.path / "data"), alias_maps="", local_recipient_maps="")


def start_ternd(start_program, cfg):
    prepare(cfg)
    return start_program([str(tern_bin("ternd")), "-f", "-c", str(cfg.path)],
                         ready=cfg.smtp_port)


def queue_json(cfg):
    rc, out, err = run_tern("queue", "list", "--json", config_dir=cfg)
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def fill_queue(cfg, start_program, n=3):
    """n messages queued with delivery paused; ternd left running."""
    prepare(cfg)
    rc, _, err = run_tern("delivery", "pause", config_dir=cfg)
    assert rc == 0 and "tern: delivery paused" in err
    for i in range(n):
        sendmail(cfg, ["joe%d@example.test" % i, "bob@other.test"], "m%d" % i)
    ternd = start_ternd(start_program, cfg)
    wait_for(lambda: len(queue_json(cfg)) == n, what="%d messages queued" % n)
    return ternd


def test_empty_queue(config_dir):
    assert run_tern("queue", "list", config_dir=config_dir)[:2] == (0, "Mail queue is empty\n")
    assert run_tern("queue", "list", "--json", config_dir=config_dir)[:2] == (0, "")
    rc, _, err = run_tern("queue", "show", "ABCDEF123456", config_dir=config_dir)
    assert rc == 1 and "tern: ABCDEF123456: no such message" in err


def test_list_format_and_json(config_dir, start_program):
    ternd = fill_queue(config_dir, start_program, n=2)
    rc, out, err = run_tern("queue", "list", config_dir=config_dir)
    assert rc == 0, err
    assert out.startswith(HEADER)
    blocks = out[len(HEADER):].split("\n\n")
    assert re.fullmatch(r"-- \d+ Kbytes in 2 Requests\.\n", blocks[-1])
    for block in blocks[:-1]:
        lines = block.split("\n")
        # "%-11s %7ld %20.20s %s": asctime cut to 20 chars, so two spaces.
        assert re.fullmatch(r"[0-9A-F]{10,16}[*!]? +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  "
                            r"alice@example\.test", lines[0]), lines[0]
        assert lines[0][11] == " " or len(lines[0].split()[0]) > 11
        assert sorted(lines[1:]) == sorted([" " * 41 + "bob@other.test",
                                            " " * 41 + lines[1].strip()])
    msgs = queue_json(config_dir)
    assert len(msgs) == 2
    for m in msgs:
        assert set(m) >= {"queue_name", "queue_id", "arrival_time", "message_size",
                          "sender", "recipients"}
        assert m["sender"] == "alice@example.test"
        assert m["queue_name"] in ("active", "deferred")
        assert abs(m["arrival_time"] - time.time()) < 120
        assert [r["address"] for r in m["recipients"]][1] == "bob@other.test"
    # mailq is the same listing
    env = dict(os.environ, TERN_CONFIG_DIR=str(config_dir.path))
    link = config_dir.path / "mailq"
    link.symlink_to(tern_bin("sendmail"))
    p = subprocess.run([str(link)], capture_output=True, env=env, timeout=30)
    assert p.stdout.decode() == out
    assert ternd.alive


def test_show_is_postcat_like(config_dir, start_program):
    fill_queue(config_dir, start_program, n=1)
    qid = queue_json(config_dir)[0]["queue_id"]
    rc, out, err = run_tern("queue", "show", qid, config_dir=config_dir)
    assert rc == 0, err
    assert out.startswith("*** ENVELOPE RECORDS %s ***\n" % qid)
    assert "sender: alice@example.test\n" in out
    assert "recipient: joe0@example.test\nrecipient: bob@other.test\n" in out
    content = out.split("*** MESSAGE CONTENTS %s ***\n" % qid)[1]
    assert re.match(r"Received: by tern\.test \(Tern, from userid %d\)\n\tid %s; " % (
        os.getuid(), qid), content)
    assert "Subject: m0\n" in content and "\nbody m0\n" in content
    assert out.endswith("*** MESSAGE FILE END %s ***\n" % qid)


def run_ops(cfg, running):
    """The postsuper-like commands; the same output whether ternd runs."""
    ids = [m["queue_id"] for m in queue_json(cfg)]
    rc, _, err = run_tern("queue", "hold", ids[0], "NOSUCH0000", "bad/id", config_dir=cfg)
    assert "tern: Placed on hold: 1 message\n" in err
    assert "NOSUCH0000" in err and "invalid mail queue id: bad/id" in err
    rc, out, _ = run_tern("queue", "list", config_dir=cfg)
    assert re.search(r"^%s! " % ids[0], out, re.M)
    assert {m["queue_id"]: m["queue_name"] for m in queue_json(cfg)}[ids[0]] == "hold"
    rc, _, err = run_tern("queue", "release", ids[0], config_dir=cfg)
    assert (rc, "tern: Released from hold: 1 message" in err) == (0, True), err
    assert "hold" not in [m["queue_name"] for m in queue_json(cfg)]
    rc, _, err = run_tern("queue", "requeue", "ALL", config_dir=cfg)
    assert (rc, "tern: Requeued: 3 messages" in err) == (0, True), err
    # seed 003: mailq | awk ... | tern queue delete -
    rc, _, err = run_tern("queue", "delete", "-", config_dir=cfg,
                          input="%s\n%s  \n" % (ids[0], ids[1]))
    assert (rc, "tern: Deleted: 2 messages" in err) == (0, True), err
    assert [m["queue_id"] for m in queue_json(cfg)] == [ids[2]]
    rc, _, err = run_tern("queue", "delete", "ALL", config_dir=cfg)
    assert (rc, "tern: Deleted: 1 message\n" in err) == (0, True), err
    assert run_tern("queue", "list", config_dir=cfg)[1] == "Mail queue is empty\n"


def test_admin_ops_with_ternd_running(config_dir, start_program):
    ternd = fill_queue(config_dir, start_program)
    run_ops(config_dir, running=True)
    assert ternd.alive
    assert re.search(r": [0-9A-F]+: removed", config_dir.maillog() + ternd.stderr())


def test_admin_ops_with_ternd_stopped(config_dir, start_program):
    ternd = fill_queue(config_dir, start_program)
    ternd.stop()
    run_ops(config_dir, running=False)


def test_flush_needs_ternd(config_dir):
    rc, _, err = run_tern("queue", "flush", config_dir=config_dir)
    assert rc == 1 and "the Tern mail system is not running" in err


def test_shape(config_dir, start_program):
    fill_queue(config_dir, start_program)
    rc, out, err = run_tern("queue", "shape", config_dir=config_dir)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"]
    assert rows[1][:3] == ["TOTAL", "6", "6"]
    # Busiest domain first, ties by name.
    assert rows[2][:3] == ["example.test", "3", "3"]
    assert rows[3][:3] == ["other.test", "3", "3"]
    assert all(int(x) == 0 for row in rows[1:] for x in row[3:])


def test_delivery_pause_is_persistent(config_dir, start_program):
    flag = config_dir.queue_directory / "delivery.paused"
    prepare(config_dir)
    assert run_tern("delivery", "status", config_dir=config_dir)[1] == "delivery is active\n"
    rc, _, err = run_tern("delivery", "pause", config_dir=config_dir)
    assert (rc, err) == (0, "tern: delivery paused\n")
    assert flag.exists()
    ternd = start_ternd(start_program, config_dir)
    assert run_tern("delivery", "status", config_dir=config_dir)[1].startswith(
        "delivery is paused (since ")
    rc, _, err = run_tern("delivery", "resume", config_dir=config_dir)
    assert (rc, err) == (0, "tern: delivery resumed\n")
    assert not flag.exists()
    rc, _, err = run_tern("delivery", "pause", config_dir=config_dir)
    assert rc == 0 and flag.exists(), err
    ternd.stop()
    assert flag.exists()


def test_tern_log_like_postlog(config_dir):
    rc, _, err = run_tern("log", "hello", "admin", config_dir=config_dir)
    assert rc == 0, err
    rc, _, err = run_tern("log", "-p", "warn", "careful", config_dir=config_dir)
    assert rc == 0, err
    rc, _, err = run_tern("log", config_dir=config_dir, input="from stdin\nsecond\n")
    assert rc == 0, err
    log = config_dir.maillog()
    assert re.search(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ tern/postlog\[\d+\]: hello admin$",
                     log, re.M)
    assert re.search(r"tern/postlog\[\d+\]: warning: careful$", log, re.M)
    assert re.search(r"tern/postlog\[\d+\]: from stdin\n.*tern/postlog\[\d+\]: second$",
                     log, re.M)
    rc, _, err = run_tern("log", "-p", "bogus", "x", config_dir=config_dir)
    assert rc == 2 and "unknown priority value: bogus" in err
