"""test_restrictions.py - ternd's access restrictions as an admin meets
them: the seed 002 examples with hash: tables built by `tern map build`,
configuration errors with file and line (ternd and `tern check`), the
Postfix log lines, and the access(5) actions whose effect is on the
message: HOLD (hold queue), DISCARD, REDIRECT, BCC, PREPEND, FILTER
(refused with a warning). Reply texts against real Postfix are in
test_restrictions_diff.py."""

import time

import pytest

import harness
from restr_util import log_text, mailbox, session, start_ternd, wait_log


def build(cfg, name, text):
    path = cfg.write_table(name, text)
    harness.run_tern("map", "build", "hash:%s" % path, check=True)
    return "hash:%s" % path


def test_seed_restriction_class(config_dir, start_program):
    """Seed 002, with the reject the README adds: only the privileged
    sender may write to the restricted address."""
    rr = build(config_dir, "restricted_recipient", "all@example.test restricted_recipient\n")
    ps = build(config_dir, "privileged_sender", "boss@example.org OK\n")
    port = start_ternd(config_dir, start_program, smtpd_restriction_classes="restricted_recipient",
                       smtpd_sender_restrictions="check_recipient_access %s" % rr,
                       restricted_recipient="check_sender_access %s, reject" % ps,
                       virtual_mailbox_maps="static:example.test/joe/")
    s = session(port)
    s.cmd("MAIL FROM:<someone@example.org>")
    # the reject comes from check_recipient_access: the recipient is named
    assert s.cmd("RCPT TO:<all@example.test>") == \
        "554 5.7.1 <all@example.test>: Recipient address rejected: Access denied"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.cmd("RSET")
    s.cmd("MAIL FROM:<boss@example.org>")
    assert s.cmd("RCPT TO:<all@example.test>") == "250 2.1.5 Ok"
    s.close()
    wait_log(config_dir, r"NOQUEUE: reject: RCPT from client\.example\.net\[192\.0\.2\.10\]: "
                         r"554 5\.7\.1 <all@example\.test>: Recipient address rejected: Access "
                         r"denied; from=<someone@example\.org> to=<all@example\.test> "
                         r"proto=ESMTP helo=<client\.example\.net>")


def test_seed_rejected_addresses_and_cidr(config_dir, start_program):
    ra = build(config_dir, "rejected_addresses", "spammer@example.org    REJECT\n")
    cidr = config_dir.write_table("client_cidr", "192.0.2.10 OK\n192.0.2.0/24 dunno\n"
                                  "0.0.0.0/0 reject_non_fqdn_sender, reject_non_fqdn_recipient\n"
                                  "::/0 reject_non_fqdn_sender, reject_non_fqdn_recipient\n")
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_sender_access %s, check_client_access "
                       "cidr:%s, reject_unauth_destination" % (ra, cidr))
    s = session(port)
    s.cmd("MAIL FROM:<spammer@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == \
        "554 5.7.1 <spammer@example.org>: Sender address rejected: Access denied"
    s.close()
    s = session(port, client=("203.0.113.5", "far.example.net"))
    s.cmd("MAIL FROM:<x@nodot>")
    assert s.cmd("RCPT TO:<joe@example.test>") == \
        "504 5.5.2 <x@nodot>: Sender address rejected: need fully-qualified address"
    s.close()
    s = session(port, client=("192.0.2.33", "near.example.net"))  # dunno: on to the next
    s.cmd("MAIL FROM:<x@nodot>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.close()


@pytest.mark.parametrize("setting,message", [
    ("smtpd_recipient_restrictions = reject_unauth_destination, permit_everything",
     'unknown restriction "permit_everything"'),
    ("smtpd_client_restrictions = check_client_access", "needs a type:table argument"),
    ("smtpd_sender_restrictions = reject_unverified_sender", "no address verification service"),
    ("smtpd_data_restrictions = inline:{a=b}", "needs a check_*_access restriction"),
    ("smtpd_restriction_classes = nothing_here", "restriction class `nothing_here' needs a def"),
])
def test_config_errors_name_file_and_line(config_dir, start_program, setting, message):
    config_dir.append("# the setting under test\n" + setting)
    line = config_dir.conf_path.read_text().splitlines().index(setting) + 1
    rc, out, err = harness.run_tern("check", config_dir=config_dir)
    assert rc != 0
    assert "%s, line %d: " % (config_dir.conf_path, line) in err and message in err, err
    proc = start_program([harness.tern_bin("ternd"), "-f", "-c", str(config_dir.path)],
                         check_exit=False)
    deadline = time.time() + 10
    while proc.alive and time.time() < deadline:
        time.sleep(0.05)
    assert not proc.alive and message in proc.stderr()


def test_warn_if_reject_and_warn_info_log_only(config_dir, start_program):
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="warn_if_reject reject_non_fqdn_sender, "
                       "check_recipient_access inline:{ { joe@example.test = WARN look at this } }")
    s = session(port)
    s.cmd("MAIL FROM:<a@nodot>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.close()
    wait_log(config_dir, r"NOQUEUE: reject_warning: RCPT from client\.example\.net\[192\.0\.2\.10\]"
                         r": 504 5\.5\.2 <a@nodot>: Sender address rejected: need fully-qualified"
                         r" address; from=<a@nodot> to=<joe@example\.test>")
    wait_log(config_dir, r"NOQUEUE: warn: RCPT from client\.example\.net\[192\.0\.2\.10\]: "
                         r"look at this; from=<a@nodot>")


def test_message_actions(config_dir, start_program):
    nobody = harness.free_port()  # the FILTER destination: nothing listens there
    table = config_dir.write_table("actions", "\n".join([
        "hold@example.org HOLD held for review",
        "discard@example.org DISCARD",
        "redirect@example.org REDIRECT alice@example.test",
        "bcc@example.org BCC archive@example.test",
        "prepend@example.org PREPEND X-Checked: by access table",
        "filter@example.org FILTER smtp:[127.0.0.1]:%d" % nobody,
    ]) + "\n")
    port = start_ternd(config_dir, start_program,
                       smtpd_sender_restrictions="check_sender_access texthash:%s" % table)
    ids = {}
    for who in ("hold", "discard", "redirect", "bcc", "prepend", "filter"):
        s = session(port)
        assert s.cmd("MAIL FROM:<%s@example.org>" % who) == "250 2.1.0 Ok"
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        reply = s.message("Subject: %s\r\n\r\nbody\r\n" % who)
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
        ids[who] = reply.split()[-1]
        s.close()
    joe = mailbox(config_dir, "joe", n=2)
    subjects = sorted(m.split(b"Subject: ")[1].split(b"\n")[0].decode() for m in joe)
    assert subjects == ["bcc", "prepend"]  # FILTER: to the filter, not to joe
    prepended = [m for m in joe if b"Subject: prepend" in m][0]
    assert b"\nX-Checked: by access table\nReceived: " in prepended
    assert [m for m in mailbox(config_dir, "alice") if b"Subject: redirect" in m]
    archive = mailbox(config_dir, "archive")
    assert [m for m in archive if b"Subject: bcc" in m]
    rc, out, err = harness.run_tern("queue", "list", config_dir=config_dir)
    assert ids["hold"] in out, out
    assert ids["discard"] not in out
    log = r"NOQUEUE: %s: RCPT from client\.example\.net\[192\.0\.2\.10\]: <%s@example\.org>: " \
          r"Sender address %s; from=<%s@example\.org> to=<joe@example\.test>"
    wait_log(config_dir, log % ("hold", "hold", "held for review", "hold"))
    wait_log(config_dir, log % ("discard", "discard", "triggers DISCARD action", "discard"))
    wait_log(config_dir, log % ("redirect", "redirect", "triggers REDIRECT alice@example\\.test",
                                "redirect"))
    wait_log(config_dir, log % ("bcc", "bcc", "triggers BCC archive@example\\.test", "bcc"))
    wait_log(config_dir, log % ("filter", "filter", "triggers FILTER smtp:\\[127\\.0\\.0\\.1\\]:%d"
                                % nobody, "filter"))
    wait_log(config_dir, r"%s: to=<joe@example\.test>, relay=none, .*status=deferred "
                         r"\(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection refused\)"
                         % (ids["filter"], nobody))
    # the BCC copy: no delivery status notification (NOTIFY=NEVER)
    wait_log(config_dir, r"to=<archive@example\.test>, relay=virtual.*status=sent")


def test_sleep_does_not_block_other_sessions(config_dir, start_program):
    port = start_ternd(config_dir, start_program,
                       smtpd_restriction_classes="slow", slow="sleep 2",
                       smtpd_recipient_restrictions="check_recipient_access "
                       "inline:{alice@example.test=slow}")
    slow = session(port)
    slow.cmd("MAIL FROM:<a@example.org>")
    t0 = time.monotonic()
    slow.sock.sendall(b"RCPT TO:<alice@example.test>\r\n")
    for i in range(5):
        s = session(port)
        s.cmd("MAIL FROM:<a@example.org>")
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        s.close()
    assert time.monotonic() - t0 < 1.5
    assert slow.reply() == "250 2.1.5 Ok"
    assert time.monotonic() - t0 >= 1.9
    slow.close()


def test_disconnect_codes(config_dir, start_program):
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_recipient_access "
                       "inline:{ { alice@example.test = 421 4.7.0 go away now } }")
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<alice@example.test>") == \
        "421 4.7.0 <alice@example.test>: Recipient address rejected: go away now"
    with pytest.raises(ConnectionError):
        s.cmd("NOOP")


def test_reload_with_unknown_restriction_refused(config_dir, start_program):
    """A restriction error found on reload: refused with file and line, the
    running configuration (and its restrictions) stays."""
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="check_recipient_access "
                       "inline:{alice@example.test=REJECT}")
    config_dir.set(smtpd_recipient_restrictions="permit_mynetworks, reject_everything")
    line = [n for n, text in enumerate(config_dir.conf_path.read_text().splitlines(), 1)
            if text.startswith("smtpd_recipient_restrictions")][0]
    rc, out, err = harness.run_tern("reload", config_dir=config_dir)
    assert rc != 0
    assert "%s, line %d: smtpd_recipient_restrictions: unknown restriction " \
           "\"reject_everything\"" % (config_dir.conf_path, line) in err + log_text(config_dir)
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<alice@example.test>").startswith("554 5.7.1 <alice@example.test>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.close()
