"""test_pflogsumm.py - Tern's mail log is Postfix's: pflogsumm, the log
summariser Postfix admins already run, reads it with --syslog-name=tern
and counts what happened (received, delivered, bounced, rejected).

ternd runs in the background (`tern start`) so its lines go to
maillog_file with the syslog prefix, exactly as pflogsumm expects them.
"""
import re
import smtplib
import subprocess

import harness


def grand_total(report, what):
    m = re.search(r"^\s*(\d+)\s+%s\b" % re.escape(what), report, re.M)
    assert m, "pflogsumm reported no %r line:\n%s" % (what, report)
    return int(m.group(1))


def test_pflogsumm_counts_tern_log(config_dir):
    cfg = config_dir
    mail = cfg.path / "mail"
    mail.mkdir()
    harness.give_to_mail_owner(mail)
    # The client (127.0.0.1) is not in mynetworks: relaying is refused.
    cfg.set(data_directory=str(cfg.path / "data"), mydestination="", mynetworks="192.0.2.0/24",
            alias_maps="", local_recipient_maps="",
            virtual_mailbox_domains="example.test",
            virtual_mailbox_maps="inline:{ joe@example.test=joe/, ann@example.test=ann/ }",
            virtual_mailbox_base=str(mail))
    rc, out, err = harness.run_tern("start", config_dir=cfg)
    assert rc == 0, err
    try:
        harness.wait_for(lambda: harness.port_accepts(cfg.smtp_port), what="ternd")
        with smtplib.SMTP("127.0.0.1", cfg.smtp_port) as s:
            s.sendmail("a@client.example", ["joe@example.test"], "Subject: 1\r\n\r\nx\r\n")
            s.sendmail("a@client.example", ["ann@example.test"], "Subject: 2\r\n\r\ny\r\n")
            # Refused at RCPT: one relay attempt, one unknown user.
            for rcpt in ("x@elsewhere.example", "bob@example.test"):
                s.mail("a@client.example")
                code, _ = s.rcpt(rcpt)
                assert code in (550, 554)
                s.rset()
        harness.wait_for(lambda: cfg.maillog().count("status=sent") == 2,
                         what="two deliveries")
    finally:
        rc, out, err = harness.run_tern("stop", config_dir=cfg)
        assert rc == 0, err
    report = subprocess.run(["pflogsumm", "--syslog-name=tern", str(cfg.maillog_file)],
                            capture_output=True, text=True, check=True).stdout
    assert grand_total(report, "received") == 2
    assert grand_total(report, "delivered") == 2
    assert grand_total(report, "bounced") == 0
    assert grand_total(report, "rejected") == 2
    assert "Relay access denied" in report
    assert "User unknown in virtual mailbox table" in report
