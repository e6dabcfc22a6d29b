"""test_duplicates.py - duplicate elimination as Postfix 3.7 does it, as
the admin sees it: the mailboxes, the files and commands aliases feed,
and the log.

Two filters, as in Postfix. The queue keeps a recipient repeated in the
envelope once (cleanup's filter: RCPT TO twice, `sendmail a a`; keyed by
address, NOTIFY and ORCPT, case-folded). The local transport delivers
each destination met in one queue recipient's alias expansion once
(local(8)'s filter: an address, a mailbox, a /file, a |command). A
skipped duplicate logs nothing. Two different queue recipients each get
their copy even when their aliases end in one mailbox, each with its own
X-Original-To: -- what a private Postfix 3.7 instance does with the same
aliases (its filter is per recipient, local_destination_recipient_limit
is 1).
"""
import re
import shutil
import smtplib

import pytest

import harness
from test_delivery import DELIVERY_RE, MSG, configure, log_text, maildir_files, send, ternd, \
    wait_log
from test_sendmail import sendmail


@pytest.fixture(autouse=True)
def _cleanup_out(config_dir):
    yield
    out = getattr(config_dir, "out_dir", None)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


def use_aliases(cfg, text):
    cfg.set(alias_maps="texthash:%s" % cfg.write_table("aliases", text))


def delivered(cfg, qid, to, orig, text="delivered to maildir", relay="virtual"):
    return wait_log(cfg, DELIVERY_RE % (qid, to, orig, relay, "2.0.0", "sent", text))


def smtp_transaction(cfg, rcpts):
    """One transaction; every RCPT (address or (address, options)) must
    get 250. Returns the queue ID from the DATA reply."""
    with smtplib.SMTP("127.0.0.1", cfg.smtp_port, timeout=10) as s:
        s.ehlo("client.example")
        assert s.mail("a@client.example")[0] == 250
        for rcpt in rcpts:
            addr, opts = rcpt if isinstance(rcpt, tuple) else (rcpt, [])
            assert s.rcpt(addr, opts) == (250, b"2.1.5 Ok")
        code, reply = s.data(MSG)
    assert code == 250, reply
    return re.search(rb"queued as ([0-9A-F]+)", reply).group(1).decode()


def test_alias_repeats_and_nested_aliases_deliver_once(config_dir, start_program):
    mail, _ = configure(config_dir)
    use_aliases(config_dir, "dup joe@example.test, joe@example.test, inner@localhost\n"
                            "inner JOE@Example.TEST, other@localhost\n"
                            "other joe@example.test\n")
    ternd(start_program, config_dir)
    send(config_dir, "a@client.example", ["dup@localhost"])
    qid = delivered(config_dir, "([0-9A-F]+)", "joe@example.test", "dup@localhost").group(1)
    wait_log(config_dir, r"%s: removed" % qid)  # the queue recipient is done
    assert len(maildir_files(mail / "example.test" / "joe")) == 1
    assert log_text(config_dir).count("%s: to=" % qid) == 1


def test_same_rcpt_twice_is_queued_once(config_dir, start_program):
    mail, _ = configure(config_dir)
    ternd(start_program, config_dir)
    qid = smtp_transaction(config_dir, ["joe@example.test", "joe@example.test",
                                        "Joe@Example.TEST"])
    wait_log(config_dir, r"%s: from=<a@client.example>, size=\d+, nrcpt=1 \(queue active\)"
             % qid)
    delivered(config_dir, qid, "joe@example.test", "")
    wait_log(config_dir, r"%s: removed" % qid)
    assert len(maildir_files(mail / "example.test" / "joe")) == 1


def test_same_rcpt_with_other_dsn_settings_is_kept(config_dir, start_program):
    # cleanup's key includes NOTIFY and ORCPT (ORCPT case-folded too).
    mail, _ = configure(config_dir)
    ternd(start_program, config_dir)
    qid = smtp_transaction(config_dir, [
        ("joe@example.test", ["NOTIFY=NEVER", "ORCPT=rfc822;joe@example.test"]),
        ("joe@example.test", ["NOTIFY=NEVER", "ORCPT=rfc822;JOE@EXAMPLE.TEST"]),
        "joe@example.test"])
    wait_log(config_dir, r"%s: from=<a@client.example>, size=\d+, nrcpt=2 \(queue active\)"
             % qid)
    wait_log(config_dir, r"%s: removed" % qid)
    assert len(maildir_files(mail / "example.test" / "joe")) == 2


def test_two_aliases_of_one_mailbox_get_one_copy_each(config_dir, start_program):
    mail, _ = configure(config_dir)
    use_aliases(config_dir, "sales joe@example.test\nsupport joe@example.test\n")
    ternd(start_program, config_dir)
    qid = smtp_transaction(config_dir, ["sales@localhost", "support@localhost"])
    delivered(config_dir, qid, "joe@example.test", "sales@localhost")
    delivered(config_dir, qid, "joe@example.test", "support@localhost")
    wait_log(config_dir, r"%s: removed" % qid)
    copies = [f.read_text() for f in maildir_files(mail / "example.test" / "joe")]
    assert sorted(re.search(r"X-Original-To: (\S+)", c).group(1) for c in copies) == [
        "sales@localhost", "support@localhost"]


def test_files_and_commands(config_dir, start_program):
    """A /file met twice gets one copy; a |command listed twice under one
    alias runs once, but twice under two aliases (Postfix keys commands
    by the alias they serve)."""
    _, out = configure(config_dir)
    use_aliases(config_dir, (
        "files {o}/box, {o}/box, files2@localhost\n"
        "files2 {o}/box\n"
        "once \"|cat >> {o}/once\", \"|cat >> {o}/once\"\n"
        "both c1@localhost, c2@localhost\n"
        "c1 \"|cat >> {o}/both\"\n"
        "c2 \"|cat >> {o}/both\"\n").format(o=out))
    ternd(start_program, config_dir)
    qid = smtp_transaction(config_dir, ["files@localhost", "once@localhost", "both@localhost"])
    wait_log(config_dir, r"%s: removed" % qid)
    assert (out / "box").read_text().count("\nbody line\n") == 1
    assert (out / "once").read_text().count("\nbody line\n") == 1
    assert (out / "both").read_text().count("\nbody line\n") == 2
    log = log_text(config_dir)
    assert log.count("delivered to file: %s/box" % out) == 1
    assert log.count("delivered to command: cat >> %s/once" % out) == 1
    assert log.count("delivered to command: cat >> %s/both" % out) == 2


def test_unknown_user_met_twice_bounces_once(config_dir, start_program):
    # Once by the address filter (same address, case aside), once by the
    # mailbox filter (same local part in another local domain).
    configure(config_dir)
    config_dir.set(mydestination="localhost, other.test")
    use_aliases(config_dir, "typo nosuchuser-xyz@localhost, NoSuchUser-XYZ@localhost, "
                            "nosuchuser-xyz@other.test\n")
    ternd(start_program, config_dir)
    send(config_dir, "joe@example.test", ["typo@localhost"])
    m = wait_log(config_dir, DELIVERY_RE % (
        "([0-9A-F]+)", "nosuchuser-xyz@localhost", "typo@localhost", "local", "5.1.1",
        "bounced", 'unknown user: "nosuchuser-xyz"'))
    qid = m.group(1)
    wait_log(config_dir, r"%s: sender non-delivery notification: [0-9A-F]+" % qid)
    wait_log(config_dir, r"%s: removed" % qid)
    assert log_text(config_dir).count("%s: to=" % qid) == 1


def test_sendmail_repeated_recipient_is_queued_once(config_dir, start_program):
    # Submitted before ternd starts (picked up at start), as in
    # test_sendmail.py: a root sendmail must not race ternd's start.
    mail, _ = configure(config_dir)
    rc, _, err = sendmail(config_dir, ["joe@example.test", "joe@example.test"],
                          "Subject: twice\n\nbody line\n")
    assert rc == 0, err
    ternd(start_program, config_dir)
    m = wait_log(config_dir, r"([0-9A-F]+): from=<[^>]+>, size=\d+, nrcpt=1 \(queue active\)")
    delivered(config_dir, m.group(1), "joe@example.test", "")
    harness.wait_for(lambda: maildir_files(mail / "example.test" / "joe"), what="delivery")
    wait_log(config_dir, r"%s: removed" % m.group(1))
    assert len(maildir_files(mail / "example.test" / "joe")) == 1
