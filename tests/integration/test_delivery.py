"""test_delivery.py - local delivery as the admin sees it: start ternd
with a config, send with smtplib, then look at the mailboxes and the log.

Covers the virtual transport (maildir under virtual_mailbox_base), the
local transport (aliases with addresses, :include:, /file and |command;
unknown users bounced 5.1.1 with a non-delivery notice), the discard
transport, a temporary failure deferred and delivered after `tern
flush`, and `tern delivery pause` surviving a restart. Log lines are
checked against Postfix's formats (reference/postfix.md §5).
"""
import re
import smtplib
import shutil
import tempfile
import time
from pathlib import Path

import pytest


import harness

MSG = "Subject: hello\r\nFrom: a@client.example\r\n\r\nbody line\r\nFrom here\r\n"



class _DeliveryRe:
    """DELIVERY_RE % (qid, to, orig_to or "", relay, dsn, status, text):
    Postfix's log_adhoc() line; orig_to= must appear exactly when given."""

    def __mod__(self, args):
        qid, to, orig, relay, dsn, status, text = args
        return (r"%s: to=<%s>, %srelay=%s, delay=[0-9.]+, "
                r"delays=[0-9.]+/[0-9.]+/0/[0-9.]+, dsn=%s, status=%s \(%s\)" % (
                    qid, re.escape(to), "orig_to=<%s>, " % re.escape(orig) if orig else "",
                    relay, dsn, status, text))


DELIVERY_RE = _DeliveryRe()


def ternd(start_program, cfg):
    argv = [str(harness.tern_bin("ternd")), "-f", "-c", str(cfg)]
    prog = start_program(argv, ready=cfg.smtp_port, name="ternd")
    cfg.ternd_runs = getattr(cfg, "ternd_runs", []) + [prog]
    return prog


def log_text(cfg):
    """Everything ternd logged: the maillog_file, else its stderr (-f)."""
    return cfg.maillog() + "".join(p.stderr() for p in getattr(cfg, "ternd_runs", []))


def configure(cfg, **extra):
    """A config where example.test is virtual and localhost is local."""
    mail = cfg.path / "mail"
    (mail / "example.test").mkdir(parents=True, exist_ok=True)
    harness.give_to_mail_owner(mail)
    # |command and /file from a root-owned alias table run as
    # default_privs (nobody), which must reach this directory.
    out = Path(tempfile.mkdtemp(prefix="tern-delivery-", dir="/tmp"))
    out.chmod(0o1777)
    cfg.out_dir = out
    cfg.set(mydestination="localhost",
            virtual_mailbox_domains="example.test",
            virtual_mailbox_base=str(mail),
            virtual_mailbox_maps="inline:{ joe@example.test=example.test/joe/, "
                                 "alice@example.test=example.test/alice }",
            local_recipient_maps="",
            alias_maps="",
            **extra)
    return mail, out


@pytest.fixture(autouse=True)
def _cleanup_out(config_dir):
    yield
    out = getattr(config_dir, "out_dir", None)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


def send(cfg, sender, rcpts, msg=MSG):
    with smtplib.SMTP("127.0.0.1", cfg.smtp_port, timeout=10) as s:
        s.ehlo("client.example")
        s.sendmail(sender, rcpts, msg)
        reply = s.noop()
    return reply


def queue_id_of(cfg, rcpt):
    m = re.search(r"([0-9A-F]{10,16}): to=<%s>" % re.escape(rcpt), log_text(cfg))
    return m.group(1) if m else None


def wait_log(cfg, pattern, timeout=10):
    rx = re.compile(pattern)
    harness.wait_for(lambda: rx.search(log_text(cfg)), timeout=timeout,
                     what="log line %r" % pattern)
    return rx.search(log_text(cfg))


def maildir_files(path):
    new = path / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_virtual_maildir(config_dir, start_program):
    mail, _ = configure(config_dir)
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["joe@example.test"])
    m = wait_log(config_dir, DELIVERY_RE % (
        "([0-9A-F]+)", "joe@example.test", "", "virtual", "2.0.0", "sent",
        "delivered to maildir"))
    qid = m.group(1)
    log = log_text(config_dir)
    assert re.search(r"%s: from=<a@client.example>, size=\d+, nrcpt=1 \(queue active\)"
                     % qid, log)
    wait_log(config_dir, r"%s: removed" % qid)
    files = maildir_files(mail / "example.test" / "joe")
    assert len(files) == 1
    text = files[0].read_text()
    assert text.startswith("Return-Path: <a@client.example>\n")
    assert "Delivered-To: joe@example.test\n" in text
    assert "\nbody line\nFrom here\n" in text  # maildir: no >From quoting
    assert not list((mail / "example.test" / "joe" / "tmp").iterdir())


def test_virtual_mbox_and_unknown(config_dir, start_program):
    # smtpd refuses unknown virtual users at RCPT; a transport_maps entry
    # sends an accepted local address to the virtual transport instead.
    mail, _ = configure(config_dir, transport_maps="inline:{ nobody@localhost=virtual: }")
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["alice@example.test", "nobody@localhost"])
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "alice@example.test", "", "virtual", "2.0.0", "sent",
        "delivered to mailbox"))
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "nobody@localhost", "", "virtual", "5.1.1", "bounced",
        'unknown user: "nobody@localhost"'))
    box = (mail / "example.test" / "alice").read_text()
    assert box.startswith("From a@client.example  ")
    assert "\n>From here\n" in box


def test_aliases_include_file_command(config_dir, start_program):
    mail, out = configure(config_dir)
    inc = config_dir.write_file("team.inc", "alice@example.test\n")
    aliases = config_dir.write_table("aliases", (
        "team joe@example.test, :include:%s, %s/team.mbox, \"|cat > %s/cmd.out\"\n"
        "self self, joe@example.test\n") % (inc, out, out))
    config_dir.set(alias_maps="texthash:%s" % aliases)
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["team@localhost"])
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "joe@example.test", "team@localhost", "virtual", "2.0.0", "sent",
        "delivered to maildir"))
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "alice@example.test", "team@localhost", "virtual", "2.0.0", "sent",
        "delivered to mailbox"))
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "team@localhost", "", "local", "2.0.0", "sent",
        "delivered to file: %s/team.mbox" % re.escape(str(out))))
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "team@localhost", "", "local", "2.0.0", "sent",
        r"delivered to command: cat > %s/cmd.out" % re.escape(str(out))))
    assert "Delivered-To: team@localhost" in (out / "team.mbox").read_text()
    assert "body line" in (out / "cmd.out").read_text()
    assert len(maildir_files(mail / "example.test" / "joe")) == 1


def test_include_may_not_run_commands(config_dir, start_program):
    _, out = configure(config_dir)
    inc = config_dir.write_file("evil.inc", "\"|touch %s/pwned\"\n" % out)
    aliases = config_dir.write_table("aliases", "list :include:%s\n" % inc)
    config_dir.set(alias_maps="texthash:%s" % aliases)
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["list@localhost"])
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "list@localhost", "", "local", "5.7.1", "bounced",
        "mail to command is restricted"))
    assert not (out / "pwned").exists()


def test_unknown_local_user_bounced(config_dir, start_program):
    configure(config_dir)
    ternd(start_program, config_dir)
    send(config_dir, "joe@example.test", ["nosuchuser-xyz@localhost"])
    m = wait_log(config_dir, DELIVERY_RE % (
        "([0-9A-F]+)", "nosuchuser-xyz@localhost", "", "local", "5.1.1", "bounced",
        'unknown user: "nosuchuser-xyz"'))
    qid = m.group(1)
    n = wait_log(config_dir, r"%s: sender non-delivery notification: ([0-9A-F]+)" % qid)
    # The notice goes to the sender, from <>, into joe's maildir.
    wait_log(config_dir, r"%s: from=<>, size=\d+, nrcpt=1 \(queue active\)" % n.group(1))
    wait_log(config_dir, DELIVERY_RE % (
        n.group(1), "joe@example.test", "", "virtual", "2.0.0", "sent",
        "delivered to maildir"))


def test_discard_transport(config_dir, start_program):
    configure(config_dir, default_transport="discard")
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["x@elsewhere.example"])
    m = wait_log(config_dir, DELIVERY_RE % (
        "([0-9A-F]+)", "x@elsewhere.example", "", "none", "2.0.0", "sent",
        "elsewhere.example"))
    wait_log(config_dir, r"%s: removed" % m.group(1))


def test_bursts_delivered_without_queue_runs(config_dir, start_program):
    """Many sessions at once, fast (discard) and slow (maildir) deliveries
    mixed: every message must be delivered by the wakeups alone, with
    queue_run_delay far away (the scheduler wakes few workers per burst
    and must never leave a message waiting for the periodic run)."""
    import threading
    mail, _ = configure(config_dir, default_transport="discard", queue_run_delay="1h")
    ternd(start_program, config_dir)
    errors = []

    def client(n):
        try:
            with smtplib.SMTP("127.0.0.1", config_dir.smtp_port, timeout=20) as s:
                s.ehlo("client.example")
                for i in range(15):
                    rcpt = "joe@example.test" if i % 5 == 0 else "x%d.%d@elsewhere.example" % (n, i)
                    s.sendmail("a@client.example", [rcpt], MSG)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    harness.wait_for(lambda: log_text(config_dir).count(": removed") >= 180, timeout=30,
                     what="180 messages delivered and removed")
    assert log_text(config_dir).count("status=sent") == 180
    assert len(maildir_files(mail / "example.test" / "joe")) == 36


def test_error_and_retry_transports(config_dir, start_program):
    configure(config_dir, transport_maps="inline:{ {gone.example=error:5.1.2 no such domain}, "
                                     "{later.example=retry:4.4.1 try later} }")
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["x@gone.example", "y@later.example"])
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "x@gone.example", "", "none", "5.1.2", "bounced", "no such domain"))
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "y@later.example", "", "none", "4.4.1", "deferred", "try later"))


def test_deferred_then_flushed(config_dir, start_program):
    mail, _ = configure(config_dir)
    blocker = mail / "example.test" / "joe"
    blocker.write_text("not a directory\n")  # makes the maildir unwritable
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["joe@example.test"])
    m = wait_log(config_dir, DELIVERY_RE % (
        "([0-9A-F]+)", "joe@example.test", "", "virtual", r"4\.2\.0", "deferred",
        "maildir delivery failed: [^)]*Not a directory"))
    qid = m.group(1)
    assert "%s: removed" % qid not in log_text(config_dir)
    # The deferral is journaled just after it is logged: flush only once
    # the queue shows it deferred (with its reason), or there is nothing
    # to flush yet.
    harness.wait_for(lambda: "maildir delivery failed" in harness.run_tern(
        "queue", "list", config_dir=config_dir, check=True)[1], what="the deferral journaled")
    blocker.unlink()
    harness.run_tern("flush", config_dir=config_dir, check=True)
    wait_log(config_dir, DELIVERY_RE % (
        qid, "joe@example.test", "", "virtual", "2.0.0", "sent", "delivered to maildir"))
    wait_log(config_dir, r"%s: removed" % qid)
    assert len(maildir_files(blocker)) == 1


def test_pause_survives_restart(config_dir, start_program):
    mail, _ = configure(config_dir)
    prog = ternd(start_program, config_dir)
    harness.run_tern("delivery", "pause", config_dir=config_dir, check=True)
    assert (config_dir.queue_directory / "delivery.paused").exists()
    send(config_dir, "a@client.example", ["joe@example.test"])
    prog.stop()
    prog = ternd(start_program, config_dir)
    time.sleep(1.5)
    assert not maildir_files(mail / "example.test" / "joe")
    assert "status=sent" not in log_text(config_dir)
    harness.run_tern("delivery", "resume", config_dir=config_dir, check=True)
    wait_log(config_dir, DELIVERY_RE % (
        "[0-9A-F]+", "joe@example.test", "", "virtual", "2.0.0", "sent",
        "delivered to maildir"))
    assert not (config_dir.queue_directory / "delivery.paused").exists()
    assert len(maildir_files(mail / "example.test" / "joe")) == 1
