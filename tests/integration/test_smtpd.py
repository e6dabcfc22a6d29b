"""test_smtpd.py - ternd's SMTP server from the outside: the seed-000
session, replies as Postfix 3.7 gives them, pipelining, BDAT, SIZE,
limits, XCLIENT, relay control, unknown users, SMTP smuggling vectors
(perf-security.md §6), timeouts and connection limits. Messages are
looked at in a virtual mailbox (Maildir) or via the log."""

import re
import select
import socket
import time

import pytest

import harness


VMAIL_MAP = "inline:{joe@example.test=example.test/joe/}"


class Smtp:
    """A raw SMTP client: send bytes, read replies as text lines."""

    def __init__(self, port, timeout=10.0, source=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.f = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.f.readline(4096)
            if not line:
                raise ConnectionError("closed after %r" % lines)
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return "\n".join(lines)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.f.read(1) == b""
        except OSError:
            return True

    def close(self):
        self.sock.close()


@pytest.fixture
def ternd(config_dir, start_program):
    """Start ternd with a config adjusted by the test; returns (cfg, port)."""

    def start(**settings):
        vbase = config_dir.path / "vmail"
        vbase.mkdir(exist_ok=True)
        harness.give_to_mail_owner(vbase)
        config_dir.set(smtpd_peername_lookup="no",
                       local_recipient_maps="inline:{joe=x, alice=x}",
                       alias_maps="",
                       virtual_mailbox_domains="example.test",
                       virtual_mailbox_maps=VMAIL_MAP,
                       virtual_mailbox_base=str(vbase),
                       smtpd_authorized_xclient_hosts="127.0.0.0/8")
        for k, v in settings.items():
            config_dir.set(k.replace("__", "."), v)
        port = config_dir.smtp_port
        config_dir.program = start_program(
            [harness.tern_bin("ternd"), "-f", "-c", str(config_dir.path)], ready=port)
        return config_dir, port

    return start


def maildir_messages(cfg, timeout=10.0):
    """Wait for and return the messages delivered to joe@example.test."""
    d = cfg.path / "vmail" / "example.test" / "joe" / "new"
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = sorted(d.glob("*")) if d.exists() else []
        if files:
            return [f.read_bytes() for f in files]
        time.sleep(0.1)
    return []


def log_text(cfg):
    """ternd -f logs to stderr; the maillog when configured."""
    prog = getattr(cfg, "program", None)
    return (prog.stderr() if prog else "") + cfg.maillog()


def wait_maillog(cfg, pattern, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, log_text(cfg), re.M)
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError("%r not in log:\n%s" % (pattern, log_text(cfg)))


def open_txn(s, rcpt="<joe@example.test>", sender="<a@example.org>"):
    assert s.cmd("EHLO client.example").startswith("250-")
    assert s.cmd("MAIL FROM:%s" % sender) == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:%s" % rcpt) == "250 2.1.5 Ok"


def body_of(msg):
    return msg.split(b"\n\n", 1)[1] if b"\n\n" in msg else msg


# --- the seed-000 session ---------------------------------------------------


def test_seed_000_session(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    assert s.reply() == "220 tern.test ESMTP Tern"
    assert s.cmd("ehlo Me") == "\n".join([
        "250-tern.test", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY",
        "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN",
        "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
        "250 CHUNKING"])
    assert s.cmd("mail from:<someone@example.com>") == "250 2.1.0 Ok"
    assert s.cmd("rcpt to: joe") == "250 2.1.5 Ok"
    assert s.cmd("data") == "354 End data with <CR><LF>.<CR><LF>"
    s.send("Subject: Just a test\r\nThis is only a test.\r\n")
    r = s.cmd(".")
    m = re.fullmatch(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{10,16})", r)
    assert m, r
    assert s.cmd("quit") == "221 2.0.0 Bye"
    assert s.closed()
    qid = m.group(1)
    wait_maillog(cfg, r"tern/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.1\]$")
    wait_maillog(cfg, r": %s: client=unknown\[127\.0\.0\.1\]$" % qid)
    wait_maillog(cfg, r": %s: message-id=<>$" % qid)
    wait_maillog(cfg, r": disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 "
                      r"data=1 quit=1 commands=5$")


def test_received_header_and_content(ternd):
    cfg, port = ternd(smtpd_client_port_logging="no")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    assert s.cmd("DATA").startswith("354")
    s.send("Subject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nline1\r\n..dotted\r\n")
    r = s.cmd(".")
    qid = r.rsplit(" ", 1)[1]
    s.cmd("QUIT")
    msgs = maildir_messages(cfg)
    assert msgs, cfg.maillog()
    text = msgs[0].decode()
    m = re.search(r"Received: from client\.example \(unknown \[127\.0\.0\.1\]\)\n"
                  r"\tby tern\.test \(Tern\) with ESMTP id %s\n"
                  r"\tfor <joe@example\.test>; \w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d "
                  r"[+-]\d{4} \(\w+\)\n" % qid, text)
    assert m, text
    assert "\r" not in text
    assert text.endswith("Subject: hi\nMessage-ID: <m1@example.org>\n\nline1\n.dotted\n")
    wait_maillog(cfg, r": %s: message-id=<m1@example\.org>$" % qid)


# --- command replies ----------------------------------------------------------


def test_command_errors_as_postfix(ternd):
    cfg, port = ternd(smtpd_soft_error_limit=100, smtpd_hard_error_limit=100)
    s = Smtp(port)
    s.reply()
    expect = [
        ("RCPT TO:<joe@example.test>", "503 5.5.1 Error: need MAIL command"),
        ("DATA", "503 5.5.1 Error: need RCPT command"),
        ("HELO", "501 Syntax: HELO hostname"),
        ("EHLO", "501 Syntax: EHLO hostname"),
        ("", "500 5.5.2 Error: bad syntax"),
        ("HELP", "500 5.5.2 Error: command not recognized"),
        ("FOO bar", "500 5.5.2 Error: command not recognized"),
        ("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a@b> SIZE=x", "501 5.5.4 Bad message size syntax"),
        ("MAIL FROM:<a@b> SIZE=99999999999", "552 5.3.4 Message size exceeds fixed limit"),
        ("MAIL FROM:<a@b> FOO=bar", "555 5.5.4 Unsupported option: FOO=bar"),
        ("MAIL FROM:<a@b> BODY=x", "555 5.5.4 Unsupported option: BODY=x"),
        ("MAIL FROM:<a@b> RET=x", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL FROM:<a@b> ENVID=x+", "501 5.5.4 Bad ENVID parameter syntax"),
        ("RSET x", "501 5.5.4 Syntax: RSET"),
        ("NOOP x", "250 2.0.0 Ok"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"),
        ("VRFY joe", "252 2.0.0 joe"),
        ("ETRN", "503 Error: send HELO/EHLO first"),
        ("EHLO me", None),
        ("ETRN example.test", "459 <example.test>: service unavailable"),
        ("MAIL FROM:<a@b> BODY=8BITMIME RET=HDRS ENVID=x+2By", "250 2.1.0 Ok"),
        ("MAIL FROM:<c@d>", "503 5.5.1 Error: nested MAIL command"),
        ("DATA", "554 5.5.1 Error: no valid recipients"),
        ("RCPT TO:", "501 5.5.4 Syntax: RCPT TO:<address>"),
        ("RCPT TO:<a@b", "501 5.1.3 Bad recipient address syntax"),
        ("RCPT TO:<joe> NOTIFY=bad", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
        ("RCPT TO:<joe> ORCPT=bad", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
        ("RCPT TO:<joe> FOO=1", "555 5.5.4 Unsupported option: FOO=1"),
        ("RCPT TO:<joe> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;joe+40example.test",
         "250 2.1.5 Ok"),
        ("XCLIENT NAME=x", "503 5.5.1 Error: MAIL transaction in progress"),
        ("DATA x", "501 5.5.4 Syntax: DATA"),
        ("RSET", "250 2.0.0 Ok"),
        ("NOOP", "250 2.0.0 Ok"),
    ]
    for line, want in expect:
        got = s.cmd(line)
        if want is not None:
            assert got == want, line
    assert s.cmd("QUIT") == "221 2.0.0 Bye"


def test_vrfy_disabled(ternd):
    cfg, port = ternd(disable_vrfy_command="yes")
    s = Smtp(port)
    s.reply()
    assert "250-VRFY" not in s.cmd("EHLO x")
    assert s.cmd("VRFY joe") == "502 5.5.1 VRFY command is disabled"


def test_discard_ehlo_keywords(ternd):
    cfg, port = ternd(smtpd_discard_ehlo_keywords="chunking, pipelining, dsn")
    s = Smtp(port)
    s.reply()
    r = s.cmd("EHLO x")
    assert "CHUNKING" not in r and "PIPELINING" not in r and "DSN" not in r
    assert r.endswith("250 SMTPUTF8")


# --- relay control and recipients --------------------------------------------


def test_relay_denied_and_unknown_users(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    assert s.cmd("XCLIENT ADDR=192.0.2.7 NAME=mx.example.org") == "220 tern.test ESMTP Tern"
    s.cmd("EHLO h.example.org")
    assert s.cmd("MAIL FROM:<s@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<x@elsewhere.example>") == \
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    assert s.cmd("RCPT TO:<nobody@tern.test>") == (
        "550 5.1.1 <nobody@tern.test>: Recipient address rejected: "
        "User unknown in local recipient table")
    assert s.cmd("RCPT TO:<bob@example.test>") == (
        "550 5.1.1 <bob@example.test>: Recipient address rejected: "
        "User unknown in virtual mailbox table")
    assert s.cmd("RCPT TO:<joe@tern.test>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<alice>") == "250 2.1.5 Ok"
    s.cmd("QUIT")
    wait_maillog(cfg, r"NOQUEUE: reject: RCPT from mx\.example\.org\[192\.0\.2\.7\]: 554 5\.7\.1 "
                      r"<x@elsewhere\.example>: Relay access denied; from=<s@example\.org> "
                      r"to=<x@elsewhere\.example> proto=ESMTP helo=<h\.example\.org>$")


def test_reject_unauth_destination_554(ternd):
    cfg, port = ternd(smtpd_relay_restrictions="permit_mynetworks, reject_unauth_destination")
    s = Smtp(port)
    s.reply()
    s.cmd("XCLIENT ADDR=192.0.2.7")
    s.cmd("EHLO x")
    s.cmd("MAIL FROM:<s@example.org>")
    assert s.cmd("RCPT TO:<x@y.example>") == "554 5.7.1 <x@y.example>: Relay access denied"
    # mynetworks clients may relay
    s2 = Smtp(port)
    s2.reply()
    s2.cmd("EHLO x")
    s2.cmd("MAIL FROM:<s@example.org>")
    assert s2.cmd("RCPT TO:<x@y.example>") == "250 2.1.5 Ok"


def test_relay_domains_subdomains(ternd):
    cfg, port = ternd(relay_domains="relay.example")
    s = Smtp(port)
    s.reply()
    s.cmd("XCLIENT ADDR=192.0.2.7")
    s.cmd("EHLO x")
    s.cmd("MAIL FROM:<s@example.org>")
    assert s.cmd("RCPT TO:<x@relay.example>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<x@sub.relay.example>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<x@notrelay.example>").startswith("554 5.7.1")


def test_open_relay_config_refused(config_dir, start_program):
    config_dir.set(smtpd_relay_restrictions="permit", smtpd_peername_lookup="no")
    p = start_program([harness.tern_bin("ternd"), "-f", "-c", str(config_dir.path)],
                      check_exit=False)
    deadline = time.time() + 10
    while p.alive and time.time() < deadline:
        time.sleep(0.1)
    assert not p.alive
    assert p.returncode != 0
    assert "relay" in (p.stderr() + p.stdout() + config_dir.maillog())


# --- limits ---------------------------------------------------------------------


def test_recipient_limit(ternd):
    cfg, port = ternd(smtpd_recipient_limit=2)
    s = Smtp(port)
    s.reply()
    open_txn(s)
    assert s.cmd("RCPT TO:<joe>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<alice>") == "452 4.5.3 Error: too many recipients"


def test_message_size_limit_during_data(ternd):
    cfg, port = ternd(message_size_limit=2000)
    s = Smtp(port)
    s.reply()
    assert "250-SIZE 2000" in s.cmd("EHLO x")
    assert s.cmd("MAIL FROM:<a@b> SIZE=2001") == "552 5.3.4 Message size exceeds fixed limit"
    assert s.cmd("MAIL FROM:<a@b> SIZE=100") == "250 2.1.0 Ok"
    s.cmd("RCPT TO:<joe@example.test>")
    s.cmd("DATA")
    s.send(("x" * 70 + "\r\n") * 100)
    assert s.cmd(".") == "552 5.3.4 Error: message file too big"
    assert s.cmd("NOOP") == "250 2.0.0 Ok"


def test_long_lines_kept_whole(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.cmd("DATA")
    long = "y" * 10000
    s.send("Subject: long\r\n\r\n" + long + "\r\n." + long + "\r\n")
    assert s.cmd(".").startswith("250 2.0.0 Ok: queued as")
    msg = maildir_messages(cfg)[0]
    assert body_of(msg) == (long + "\n" + long + "\n").encode()


def test_long_command_line_truncated(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    assert s.cmd("NOOP " + "z" * 100000) == "250 2.0.0 Ok"
    assert s.cmd("NOOP") == "250 2.0.0 Ok"


def test_timeout(ternd):
    cfg, port = ternd(smtpd_timeout="2s")
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO x")
    t0 = time.time()
    assert s.reply() == "421 4.4.2 tern.test Error: timeout exceeded"
    assert 1.5 <= time.time() - t0 < 6
    assert s.closed()
    wait_maillog(cfg, r"timeout after EHLO from unknown\[127\.0\.0\.1\]$")


def test_hard_error_limit(ternd):
    cfg, port = ternd(smtpd_hard_error_limit=3, smtpd_soft_error_limit=10)
    s = Smtp(port)
    s.reply()
    assert s.cmd("NOOP") == "250 2.0.0 Ok"
    for _ in range(3):
        assert s.cmd("BOGUS").startswith("500")
    # Postfix checks the limit before reading the next command
    assert s.reply() == "421 4.7.0 tern.test Error: too many errors"
    assert s.closed()
    wait_maillog(cfg, r"too many errors after UNKNOWN from unknown\[127\.0\.0\.1\]$")
    wait_maillog(cfg, r"disconnect from unknown\[127\.0\.0\.1\] noop=1 unknown=0/3 "
                      r"commands=1/4$")


def test_soft_error_limit_sleeps(ternd):
    cfg, port = ternd(smtpd_soft_error_limit=1, smtpd_error_sleep_time="1s")
    s = Smtp(port)
    s.reply()
    s.cmd("BOGUS")
    t0 = time.time()
    assert s.cmd("NOOP") == "250 2.0.0 Ok"
    assert time.time() - t0 >= 0.9


def wait_probe_gone(cfg):
    """The harness's readiness probe is a connection too: wait for its end."""
    wait_maillog(cfg, r"disconnect from unknown\[127\.0\.0\.1\] commands=0/0$")


def test_connection_count_limit(ternd):
    cfg, port = ternd(smtpd_client_connection_count_limit=2,
                      smtpd_client_event_limit_exceptions="",
                      smtpd_authorized_xclient_hosts="")  # XCLIENT hosts are exempt
    wait_probe_gone(cfg)
    a, b = Smtp(port), Smtp(port)
    assert a.reply().startswith("220") and b.reply().startswith("220")
    c = Smtp(port)
    assert c.reply() == "421 4.7.0 tern.test Error: too many connections from 127.0.0.1"
    assert c.closed()
    wait_maillog(cfg, r"warning: Connection concurrency limit exceeded: 3 from "
                      r"unknown\[127\.0\.0\.1\] for service smtp")
    a.cmd("QUIT")
    time.sleep(0.3)
    d = Smtp(port)
    assert d.reply().startswith("220")


def test_connection_limit_mynetworks_exempt(ternd):
    cfg, port = ternd(smtpd_client_connection_count_limit=1)
    a, b = Smtp(port), Smtp(port)
    assert a.reply().startswith("220") and b.reply().startswith("220")


def test_connection_rate_limit(ternd):
    cfg, port = ternd(smtpd_client_connection_rate_limit=3,
                      smtpd_client_event_limit_exceptions="",
                      smtpd_authorized_xclient_hosts="")  # XCLIENT hosts are exempt
    wait_probe_gone(cfg)  # the probe was connection 1 of 3
    for _ in range(2):
        s = Smtp(port)
        assert s.reply().startswith("220")
        s.cmd("QUIT")
    s = Smtp(port)
    assert s.reply() == "421 4.7.0 tern.test Error: too many connections from 127.0.0.1"


# --- pipelining -------------------------------------------------------------------


def test_pipelined_transactions(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    s.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.test>\r\nRCPT TO:<nobody>\r\n"
           "DATA\r\n")
    assert s.reply().endswith("250 CHUNKING")
    assert s.reply() == "250 2.1.0 Ok"
    assert s.reply() == "250 2.1.5 Ok"
    assert s.reply().startswith("550 5.1.1 <nobody>")
    assert s.reply().startswith("354")
    s.send("Subject: 1\r\n\r\none\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.test>\r\n"
           "DATA\r\n")
    assert s.reply().startswith("250 2.0.0 Ok: queued as")
    assert s.reply() == "250 2.1.0 Ok"
    assert s.reply() == "250 2.1.5 Ok"
    assert s.reply().startswith("354")
    s.send("Subject: 2\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
    assert s.reply().startswith("250 2.0.0 Ok: queued as")
    assert s.reply() == "221 2.0.0 Bye"
    assert len(maildir_messages(cfg)) >= 1


def test_unauth_pipelining_refused(ternd):
    cfg, port = ternd(smtpd_forbid_unauth_pipelining="yes")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.send("DATA\r\nSubject: x\r\n\r\nsmuggled\r\n.\r\n")
    assert s.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
    assert s.closed()
    wait_maillog(cfg, r"improper command pipelining after DATA from unknown\[127\.0\.0\.1\]")


# --- BDAT ---------------------------------------------------------------------


def test_bdat(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    open_txn(s)
    part1 = b"Subject: chunks\r\n\r\nfirst\r\n.\r\n"
    s.send(b"BDAT %d\r\n" % len(part1) + part1)
    assert s.reply() == "250 2.0.0 Ok: %d bytes" % len(part1)
    assert s.cmd("DATA") == "503 5.5.1 Error: DATA after BDAT"
    part2 = b"second\r\n"
    s.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    r = s.reply()
    assert re.fullmatch(r"250 2\.0\.0 Ok: %d bytes queued as [0-9A-F]+" %
                        (len(part1) + len(part2)), r), r
    assert body_of(maildir_messages(cfg)[0]) == b"first\n.\nsecond\n"


def test_bdat_without_transaction_and_bad_syntax(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    s.send(b"BDAT 3\r\nabc")
    assert s.reply() == "503 5.5.1 Error: need RCPT command"
    assert s.cmd("BDAT x") == "521 5.5.4 Syntax: BDAT count [LAST]"
    assert s.closed()


# --- SMTP smuggling (perf-security.md §6) --------------------------------------

SMUGGLE_VECTORS = [
    b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r.\r\n",
    b"\r\n.\r", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n",
]


@pytest.mark.parametrize("mode", ["no", "normalize"])
def test_smuggling_vectors_never_end_data(ternd, mode):
    cfg, port = ternd(smtpd_forbid_bare_newline=mode,
                      smtpd_forbid_bare_newline_exclusions="")
    s = Smtp(port)
    s.reply()
    for vec in SMUGGLE_VECTORS:
        s.cmd("RSET")
        open_txn(s)
        assert s.cmd("DATA").startswith("354")
        s.send(b"Subject: smuggle\r\n\r\nbefore" + vec +
               b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\n")
        # nothing may be answered: all of that is still message content
        ready, _, _ = select.select([s.sock], [], [], 0.5)
        assert not ready, vec
        r = s.cmd("\r\n.")
        assert r.startswith("250 2.0.0 Ok: queued as"), (vec, r)
    s.cmd("QUIT")
    wait_maillog(cfg, r"disconnect from .* data=12 ")
    assert "evil@example.org>, size" not in log_text(cfg)


def test_empty_message_and_dot_first(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.cmd("DATA")
    assert s.cmd(".").startswith("250 2.0.0 Ok: queued as")


def test_bare_lf_reject(ternd):
    cfg, port = ternd(smtpd_forbid_bare_newline="reject",
                      smtpd_forbid_bare_newline_exclusions="")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.cmd("DATA")
    s.send(b"Subject: x\r\n\r\nbare\nlf\r\n")
    assert s.cmd(".") == "550 5.5.2 tern.test Error: bare <LF> received"
    s.send(b"NOOP\n")
    assert s.reply() == "550 5.5.2 tern.test Error: bare <LF> received"
    assert s.cmd("NOOP") == "250 2.0.0 Ok"


def test_bare_lf_excluded_mynetworks(ternd):
    cfg, port = ternd(smtpd_forbid_bare_newline="reject")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.cmd("DATA")
    s.send(b"Subject: x\r\n\r\nbare\nlf\r\n")
    assert s.cmd(".").startswith("250 2.0.0 Ok")


def test_bare_lf_normalized_content(ternd):
    cfg, port = ternd(smtpd_forbid_bare_newline="normalize")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    s.cmd("DATA")
    # a bare LF ends a content line, a bare CR becomes a space, and a "."
    # line after a bare LF is content (only CRLF.CRLF ends DATA)
    s.send(b"Subject: x\r\n\r\na\nb\rc\n..\r\nd\r\n")
    assert s.cmd(".").startswith("250 2.0.0 Ok")
    assert body_of(maildir_messages(cfg)[0]) == b"a\nb c\n.\nd\n"


# --- XCLIENT ----------------------------------------------------------------------


def test_xclient(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    assert s.cmd("XCLIENT") == "501 5.5.4 Syntax: XCLIENT attribute=value..."
    assert s.cmd("XCLIENT ADDR=1.2.3") == "501 5.5.4 Bad ADDR syntax: 1.2.3"
    assert s.cmd("XCLIENT FOO=bar") == "501 5.5.4 Bad XCLIENT attribute name: FOO"
    assert s.cmd("XCLIENT NAME") == "501 5.5.4 Error: attribute=value expected"
    assert s.cmd("XCLIENT HELO=" + "a" * 256) == "501 5.5.4 Error: attribute value too long"
    # Decoded CR/LF never reaches a reply (it would desynchronise the client).
    assert s.cmd("XCLIENT HELO=evil+0D+0AX-Injected:+20yes") == \
        "501 5.5.4 Bad HELO syntax: evil??X-Injected: yes"
    assert s.cmd("XCLIENT ADDR=IPV6:2001:db8::1 NAME=[UNAVAILABLE] PORT=77") == \
        "220 tern.test ESMTP Tern"
    assert "XCLIENT" not in s.cmd("EHLO x")  # no longer an authorized client
    assert s.cmd("XCLIENT NAME=x") == "550 5.7.0 Error: insufficient authorization"
    open_txn(s)
    s.cmd("DATA")
    s.send("Subject: x\r\n\r\nhi\r\n")
    qid = s.cmd(".").rsplit(" ", 1)[1]
    s.cmd("QUIT")
    wait_maillog(cfg, r": %s: client=unknown\[2001:db8::1\]$" % qid)
    text = maildir_messages(cfg)[0].decode()
    assert "\nReceived: from client.example (unknown [IPv6:2001:db8::1])\n" in text, text


def test_xclient_unauthorized(ternd):
    cfg, port = ternd(smtpd_authorized_xclient_hosts="192.0.2.0/24")
    s = Smtp(port)
    s.reply()
    assert "XCLIENT" not in s.cmd("EHLO x")
    assert s.cmd("XCLIENT ADDR=192.0.2.1") == "550 5.7.0 Error: insufficient authorization"


# --- client name lookup -------------------------------------------------------------


def test_peername_lookup(ternd, dns):
    # libunbound answers the loopback reverse zone itself (127.in-addr.arpa:
    # 1.0.0.127 -> localhost, others NXDOMAIN) whatever the forwarder says,
    # so loopback clients test both outcomes: a forward-confirmed name and
    # "unknown".
    d = dns(a={"mail.example.net": ["127.0.0.9"]})
    cfg, port = ternd(smtpd_peername_lookup="yes", dns_servers=d.server)
    s = Smtp(port, source="127.0.0.1")
    assert s.reply().startswith("220")
    s.cmd("QUIT")
    wait_maillog(cfg, r"connect from localhost\[127\.0\.0\.1\]$")
    s = Smtp(port, source="127.0.0.9")
    assert s.reply().startswith("220")
    s.cmd("QUIT")
    wait_maillog(cfg, r"connect from unknown\[127\.0\.0\.9\]$")


def test_concurrent_rcpt_parameters_do_not_cross_sessions(ternd):
    """Regression: RCPT parameters (NOTIFY, ORCPT) were parsed through one
    global pointer shared by all loop threads; sessions pipelining them at
    once crashed ternd. Many sessions do it at once here; every RCPT must
    get its own 250 and ternd must stay up."""
    import threading
    cfg, port = ternd(smtpd_recipient_limit="1000")
    errors = []

    def client(n):
        try:
            s = Smtp(port, timeout=30)
            s.reply()
            s.cmd("EHLO c%d.example" % n)
            s.cmd("MAIL FROM:<s%d@example.org>" % n)
            batch = "".join("RCPT TO:<joe@example.test> NOTIFY=SUCCESS,FAILURE,DELAY "
                            "ORCPT=rfc822;u%d-%d@example.test\r\n" % (n, i) for i in range(300))
            s.send(batch)
            for i in range(300):
                r = s.reply()
                if r != "250 2.1.5 Ok":
                    errors.append((n, i, r))
                    break
            s.cmd("QUIT")
            s.close()
        except Exception as e:  # a crash shows up as a closed connection
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cfg.program.alive


def test_helo_is_made_printable_and_keeps_all_words(ternd):
    """A CR in HELO must not reach the Received: header (header
    injection); all words are kept, as Postfix's collapse_args()."""
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    s.send("HELO a\rb  two\r\n")
    assert s.reply() == "250 tern.test"
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    s.cmd("DATA")
    s.send("Subject: x\r\n\r\nhi\r\n")
    s.cmd(".")
    s.cmd("QUIT")
    text = maildir_messages(cfg)[0].decode()
    assert "\nReceived: from a?b two (" in text, text


def test_size_overflow_reply(ternd):
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org> SIZE=99999999999999999999") == \
        "552 5.3.4 Message size exceeds file system imposed limit"


def test_half_close_still_gets_every_reply(ternd):
    """A client that pipelines two transactions and half-closes without
    QUIT must still read both "queued as" replies: dropping the last one
    makes it send the message again (a duplicate)."""
    cfg, port = ternd()
    s = Smtp(port)
    s.reply()
    msg = b"Subject: x\r\n\r\nhi\r\n"
    txn = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<joe@example.test>\r\nBDAT %d LAST\r\n%s" % (
        len(msg), msg)
    s.send(b"EHLO x\r\n" + txn + txn)
    s.sock.shutdown(socket.SHUT_WR)
    s.sock.settimeout(10)
    rest = s.f.read().decode()
    assert rest.count("bytes queued as ") == 2, rest
    assert len(maildir_messages(cfg)) >= 1


def test_data_memory_limit(ternd):
    """Content held by all sessions together is bounded
    (smtpd_data_memory_limit): past it the message gets 452 4.3.1, never
    a 250 and never unbounded memory; the next message is accepted."""
    cfg, port = ternd(smtpd_data_memory_limit="1m")
    s = Smtp(port)
    s.reply()
    open_txn(s)
    assert s.cmd("DATA").startswith("354")
    line = "x" * 998 + "\r\n"
    s.send("Subject: big\r\n\r\n" + line * 2100)  # ~2 MB > 1 MiB
    assert s.cmd(".") == "452 4.3.1 Insufficient system storage"
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.cmd("DATA").startswith("354")
    s.send("Subject: small\r\n\r\nhi\r\n")
    assert s.cmd(".").startswith("250 2.0.0 Ok: queued as ")
    s.cmd("QUIT")
    wait_maillog(cfg, r"smtpd_data_memory_limit \(1048576 bytes\) reached")
