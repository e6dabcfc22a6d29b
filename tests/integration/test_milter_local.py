"""test_milter_local.py - non_smtpd_milters: mail submitted with sendmail
goes through the milters as Postfix's cleanup shows it (an emulated ESMTP
session from localhost[127.0.0.1], HELO localhost, the message without
our Received:), and their verdicts are Postfix's: edits applied, a reject
bounces to the sender, a tempfail keeps the maildrop file, discard drops,
quarantine holds. smtpd_milters never see local mail, and
non_smtpd_milters never see SMTP mail."""

import re
import time

import harness
from restr_util import wait_log
from test_milter_client import (events, headers_of, maildir, pymilter,  # noqa: F401 (fixture)
                                send, start_ternd, wait_mail)
from test_sendmail import maildrop_files, sendmail

LOCAL = ("From: Alice <alice@example.test>\nTo: joe@example.test\nSubject: local one\n"
         "X-Delete-Me: yes\nX-Twice: first\nX-Twice: second\n\nhello from sendmail\n")


def submit(cfg, sender="alice@example.test", rcpts=("joe@example.test",), text=LOCAL):
    rc, out, err = sendmail(cfg, ["-f", sender, *rcpts], text)
    assert rc == 0, (rc, out, err)


def test_local_mail_seen_as_postfix_shows_it(config_dir, start_program, pymilter):
    ep, log = pymilter("record")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir)
    text = wait_mail(config_dir, "joe")[0].decode().replace("\r\n", "\n")
    assert "hello from sendmail" in text
    conn = events(log, "connect")[-1]
    assert conn["host"] == "localhost" and "127.0.0.1" in conn["addr"], conn
    assert events(log, "helo")[-1]["name"] == "localhost"
    mail = events(log, "mail")[-1]
    assert mail["sender"] == "<alice@example.test>", mail
    assert [e["rcpt"] for e in events(log, "rcpt")] == ["<joe@example.test>"]
    seen = [h[0] for h in events(log, "eoh")[-1]["headers"]]
    assert "Received" not in seen and seen[:3] == ["From", "To", "Subject"], seen
    eom = events(log, "eom")[-1]["macros"]
    qid = re.search(r"\bid ([0-9A-Za-z]+);", text).group(1)  # pickup's Received: id
    assert eom.get("i") == qid, (eom, qid)
    assert conn["macros"].get("{daemon_name}"), conn
    assert maildrop_files(config_dir) == []


def test_local_mail_gets_every_edit(config_dir, start_program, pymilter):
    ep, log = pymilter("edits")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir, rcpts=("joe@example.test", "archive@example.test"))
    for user in ("joe", "added", "alice"):
        text = wait_mail(config_dir, user)[0].decode().replace("\r\n", "\n")
        hdrs = headers_of(text)
        assert "Return-Path: <bounce@example.org>" in hdrs, hdrs
        assert "Subject: changed subject" in hdrs
        assert "X-Added: appended" in hdrs
        assert "X-Twice: second, changed" in hdrs
        assert not any(h.startswith("X-Delete-Me") for h in hdrs)
        # our Received: stays on top of what the milter saw: X-Inserted-0 above it
        names = [h.split(":", 1)[0] for h in hdrs]
        assert names.index("X-Inserted-0") < names.index("Received") < names.index("From")
        assert text.split("\n\n", 1)[1].startswith("line 00000 ")
    time.sleep(0.5)
    assert maildir(config_dir, "archive") == []


def test_local_mail_rejected_bounces_to_sender(config_dir, start_program, pymilter):
    ep, log = pymilter("reject-eom")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir)
    wait_log(config_dir, r"milter-reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: "
             r"5\.7\.1 rejected 100% by test; from=<alice@example\.test> "
             r"to=<joe@example\.test>")
    bounce = wait_mail(config_dir, "alice")[0].decode("utf-8", "replace")
    assert "5.7.1" in bounce and "rejected 100% by test" in bounce, bounce
    time.sleep(0.3)
    assert maildir(config_dir, "joe") == []
    assert maildrop_files(config_dir) == []


def test_local_mail_tempfail_stays_in_maildrop(config_dir, start_program, pymilter):
    ep, log = pymilter("tempfail-eom")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir)
    wait_log(config_dir, r"non_smtpd_milters: 451 4\.7\.1 Service unavailable - try again "
             r"later -- will try again")
    time.sleep(0.3)
    assert maildir(config_dir, "joe") == []
    assert len(maildrop_files(config_dir)) == 1


def test_local_mail_discarded(config_dir, start_program, pymilter):
    ep, log = pymilter("discard")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir)
    wait_log(config_dir, r"milter-discard: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]")
    time.sleep(0.5)
    assert maildir(config_dir, "joe") == []
    assert maildrop_files(config_dir) == []


def test_local_mail_quarantined_is_held(config_dir, start_program, pymilter):
    ep, log = pymilter("quarantine")
    start_ternd(config_dir, start_program, non_smtpd_milters=ep)
    submit(config_dir)
    wait_log(config_dir, r"([0-9A-Za-z]+): milter-hold: END-OF-MESSAGE from "
                 r"localhost\[127\.0\.0\.1\]: test quarantine")
    time.sleep(0.5)
    assert maildir(config_dir, "joe") == []
    out = harness.run_tern("queue", "list", config_dir=config_dir, check=True)[1]
    assert "!" in out and "alice@example.test" in out, out
    assert maildrop_files(config_dir) == []


def test_milter_lists_are_separate(config_dir, start_program, pymilter):
    """smtpd_milters see SMTP mail only, non_smtpd_milters local mail only."""
    ep_smtp, log_smtp = pymilter("tag:smtp")
    ep_local, log_local = pymilter("tag:local")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep_smtp,
                       non_smtpd_milters=ep_local)
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250")
    submit(config_dir, rcpts=("alice@example.test",))
    smtp_copy = wait_mail(config_dir, "joe")[0].decode()
    local_copy = wait_mail(config_dir, "alice")[0].decode()
    assert "X-Tag: smtp" in smtp_copy and "X-Tag: local" not in smtp_copy
    assert "X-Tag: local" in local_copy and "X-Tag: smtp" not in local_copy
    assert all(e["sender"] != "<alice@example.test>" for e in events(log_smtp, "mail"))
    assert all(e["sender"] == "<alice@example.test>" for e in events(log_local, "mail"))


def test_local_milter_down_default_action(config_dir, start_program):
    """A dead non-SMTP milter with default_action=tempfail: the file stays."""
    dead = harness.free_port()
    start_ternd(config_dir, start_program,
                non_smtpd_milters="{ inet:127.0.0.1:%d, default_action=tempfail }" % dead)
    submit(config_dir)
    wait_log(config_dir, r"non_smtpd_milters: .* -- will try again")
    assert len(maildrop_files(config_dir)) == 1
    assert maildir(config_dir, "joe") == []
