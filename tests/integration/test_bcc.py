"""test_bcc.py - automatic BCC as Postfix does it (postfix.md §6.1):
always_bcc, sender_bcc_maps and recipient_bcc_maps with several table
types (the seed 002 archive-check pcre table as written, with the domain
changed), the lookup order, one copy per message, and NOTIFY=NEVER for
the copies (a failed copy never bounces to the sender). The BCC
access/policy action is in test_restrictions.py."""

import time

import pytest

import harness
from restr_util import mailbox, session, start_ternd, wait_log


def send(port, sender, rcpts, subject):
    s = session(port)
    assert s.cmd("MAIL FROM:<%s>" % sender) == "250 2.1.0 Ok"
    for r in rcpts:
        assert s.cmd("RCPT TO:<%s>" % r) == "250 2.1.5 Ok"
    reply = s.message("Subject: %s\r\n\r\nbody\r\n" % subject)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    s.close()
    return reply.split()[-1]


def subjects(msgs):
    return sorted(m.split(b"Subject: ")[1].split(b"\n")[0].decode() for m in msgs)


def test_seed_archive_check_pcre(config_dir, start_program):
    """Seed 002: copy when the sender OR the recipient is outside the
    domain: "!/@example\\.test$/ archive@..." in both maps."""
    table = config_dir.write_table("archive-check", "!/@example\\.test$/        "
                                                    "archive@example.test\n")
    port = start_ternd(config_dir, start_program, sender_bcc_maps="pcre:%s" % table,
                       recipient_bcc_maps="pcre:%s" % table, relay_domains="elsewhere.test",
                       transport_maps="inline:{elsewhere.test=discard:}")
    send(port, "alice@example.test", ["joe@example.test"], "internal")
    send(port, "someone@example.org", ["joe@example.test"], "inbound")
    qid = send(port, "alice@example.test", ["joe@example.test", "x@elsewhere.test"], "outbound")
    assert subjects(mailbox(config_dir, "joe", 3)) == ["inbound", "internal", "outbound"]
    time.sleep(0.5)
    # one copy per message, even when both maps match
    assert subjects(mailbox(config_dir, "archive", 2)) == ["inbound", "outbound"]
    wait_log(config_dir, r"%s: to=<archive@example\.test>, relay=virtual.*status=sent" % qid)
    wait_log(config_dir, r"%s: from=<alice@example\.test>, size=\d+, nrcpt=3 \(queue active\)"
             % qid)


@pytest.mark.parametrize("kind", ["texthash", "hash", "inline", "regexp"])
def test_sender_bcc_maps_table_types_and_key_order(config_dir, start_program, kind):
    entries = {"alice+list@example.test": "archive@example.test",
               "@example.org": "alice@example.test"}
    if kind == "regexp":
        spec = "regexp:%s" % config_dir.write_table(
            "sbcc", "/^alice\\+list@example\\.test$/ archive@example.test\n"
                    "/@example\\.org$/ alice@example.test\n")
    elif kind == "inline":
        spec = "inline:{ %s }" % ", ".join("%s=%s" % kv for kv in entries.items())
    else:
        path = config_dir.write_table("sbcc", "".join("%s %s\n" % kv for kv in entries.items()))
        if kind == "hash":
            harness.run_tern("map", "build", "hash:%s" % path, check=True)
        spec = "%s:%s" % (kind, path)
    port = start_ternd(config_dir, start_program, sender_bcc_maps=spec,
                       recipient_delimiter="+")
    send(port, "alice+list@example.test", ["joe@example.test"], "ext")
    send(port, "bob@example.org", ["joe@example.test"], "domain")
    send(port, "alice@example.test", ["joe@example.test"], "none")
    assert subjects(mailbox(config_dir, "joe", 3)) == ["domain", "ext", "none"]
    assert subjects(mailbox(config_dir, "archive")) == ["ext"]
    assert subjects(mailbox(config_dir, "alice")) == ["domain"]


def test_always_bcc_and_recipient_maps_notify_never(config_dir, start_program):
    """always_bcc to a mailbox that does not exist: the copy bounces, but
    NOTIFY=NEVER keeps the sender free of a bounce."""
    port = start_ternd(config_dir, start_program, always_bcc="nobody@example.test",
                       recipient_bcc_maps="static:archive@example.test")
    qid = send(port, "alice@example.test", ["joe@example.test"], "copied")
    assert subjects(mailbox(config_dir, "joe")) == ["copied"]
    assert subjects(mailbox(config_dir, "archive")) == ["copied"]
    wait_log(config_dir, r"%s: to=<nobody@example\.test>, relay=virtual.*status=bounced" % qid)
    time.sleep(1.0)
    assert mailbox(config_dir, "alice", timeout=0.5) == []
    # recipient_bcc_maps are looked up for real recipients, not for copies
    assert len(mailbox(config_dir, "archive")) == 1


def test_bcc_map_failure_refuses_the_message_for_now(config_dir, start_program, tmp_path):
    """A BCC map that cannot be read (a socketmap whose server is down)
    must not lose the copy: the message is refused with 451 4.3.0, as
    Postfix's cleanup does, and accepted with its copy once the map
    works again."""
    sock = tmp_path / "bccmap.sock"
    harness.traversable(tmp_path)
    port = start_ternd(config_dir, start_program,
                       sender_bcc_maps="socketmap:unix:%s:bcc" % sock)
    s = session(port)
    assert s.cmd("MAIL FROM:<alice@example.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    reply = s.message("Subject: lost?\r\n\r\nbody\r\n")
    assert reply == "451 4.3.0 Error: queue file write error", reply
    s.close()
    wait_log(config_dir, r"sender_bcc_maps lookup error for alice@example\.test")
    assert harness.run_tern("queue", "list", config_dir=config_dir,
                            check=True)[1].count("alice@example.test") == 0


def test_automatic_bcc_for_locally_submitted_mail(config_dir, start_program):
    """Postfix's cleanup makes the copies for all mail: sendmail too."""
    import os
    import subprocess
    table = config_dir.write_table("sbcc", "alice@example.test archive@example.test\n")
    start_ternd(config_dir, start_program, sender_bcc_maps="texthash:%s" % table)
    p = subprocess.run([str(harness.tern_bin("sendmail")), "-f", "alice@example.test",
                        "joe@example.test"],
                       input=b"Subject: local\n\nbody\n", capture_output=True, timeout=20,
                       env=dict(os.environ, TERN_CONFIG_DIR=str(config_dir.path)))
    assert p.returncode == 0, p.stderr
    assert subjects(mailbox(config_dir, "joe", 1)) == ["local"]
    assert subjects(mailbox(config_dir, "archive", 1)) == ["local"]
