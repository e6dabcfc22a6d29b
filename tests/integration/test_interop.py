"""test_interop.py - ternd and a real Postfix relaying to each other
(issue 4, acceptance: "ternd relays to a real Postfix instance on another
loopback port that delivers to its own mailbox; Postfix relays to ternd").

Two MTAs on loopback, no DNS:

- Postfix 3.7 (Debian's package, a private instance, see pfinstance.py) on
  127.0.0.1:PFPORT, `myhostname = mx.pf.test`. It delivers pf.test into
  maildirs under its own directory (virtual(8); only user@ and other@ exist,
  anything else is refused at RCPT with "550 5.1.1 ... User unknown in
  virtual mailbox table") and relays tern.test with
  `transport_maps = inline:{ tern.test=smtp:[127.0.0.1]:TERNPORT }`.
  It logs to a maillog_file, with each SMTP command from/to 127.0.0.1.
- ternd (`ternd -f -c CFG`, as root dropping to the tern user),
  `myhostname = tern.test`, delivers tern.test into maildirs (sender@ and
  user@) and relays pf.test with `transport_maps` `pf.test
  smtp:[127.0.0.1]:PFPORT`. Its notices to sender@tern.test, and Postfix's,
  land in the sender's maildir and are parsed with the email package.

Tests: A ternd -> Postfix (two recipients, DSN parameters passed on and
acted on by Postfix, BODY=8BITMIME with an 8-bit body, dot-stuffing, no
"relayed" notice since Postfix speaks DSN); B Postfix -> ternd (both
Received: headers in order, each side's queue ID as the other logs it);
C Postfix refuses one of two recipients: ternd bounces it with Postfix's
reply and sends an RFC 3464 notice (whose delay= must not exceed the real
time, as Postfix's sub-second arrival times ensure), the other is
delivered.
"""

import email
import re
import smtplib
import time

import pytest

import harness
from pfinstance import PostfixInstance
from test_outbound import parse_report_bytes

PF_MAILBOXES = {"user@pf.test": "pf.test/user/", "other@pf.test": "pf.test/other/"}
TERN_MAILBOXES = {"sender@tern.test": "tern.test/sender/", "user@tern.test": "tern.test/user/"}
SENDER = "sender@tern.test"
PF_HOST = "mx.pf.test"
FAST_RETRY = dict(minimal_backoff_time="1s", maximal_backoff_time="2s", queue_run_delay="1s")
QID = r"[0-9A-F]+"

WORLD_KEY = pytest.StashKey[object]()


# --- the two MTAs ---------------------------------------------------------------

class Interop:
    """One test's world: the Postfix instance (.pf) and ternd (.cfg)."""

    def __init__(self, cfg, start_program, tmp_path, pf_main=None):
        self.cfg, self._start_program = cfg, start_program
        self.pf = PostfixInstance(
            tmp_path / "postfix", harness.free_port(), myhostname=PF_HOST,
            mailboxes=PF_MAILBOXES,
            transport={"tern.test": "smtp:[127.0.0.1]:%d" % cfg.smtp_port}, main=pf_main)
        self.mail = cfg.path / "mail"
        self.runs = []

    def start(self):
        self.pf.start()
        (self.mail / "tern.test").mkdir(parents=True, exist_ok=True)
        harness.give_to_mail_owner(self.mail)
        table = self.cfg.write_table("transport", "pf.test smtp:[127.0.0.1]:%d\n" % self.pf.port)
        self.cfg.set(mydestination="",
                     virtual_mailbox_domains="tern.test",
                     virtual_mailbox_base=str(self.mail),
                     virtual_mailbox_maps="inline:{ %s }" % ", ".join(
                         "%s=%s" % kv for kv in TERN_MAILBOXES.items()),
                     alias_maps="",
                     local_recipient_maps="",
                     mynetworks="127.0.0.0/8",
                     transport_maps="texthash:%s" % table,
                     **FAST_RETRY)
        argv = [str(harness.tern_bin("ternd")), "-f", "-c", str(self.cfg)]
        self.runs.append(self._start_program(argv, ready=self.cfg.smtp_port, name="ternd"))
        return self

    # -- ternd's side ------------------------------------------------------------

    def log(self):
        """Everything ternd logged: the maillog_file, else its stderr (-f)."""
        return self.cfg.maillog() + "".join(p.stderr() for p in self.runs)

    def explain(self, what):
        """A failure message; ternd's output and Postfix's diagnostics
        follow in the report's sections."""
        return "%s\n--- ternd log (the end) ---\n%s" % (
            what, "\n".join(self.log().splitlines()[-30:]))

    def wait(self, predicate, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(self.explain("timed out after %.0fs waiting for %s"
                                                  % (timeout, what)))
            time.sleep(0.05)

    def wait_log(self, pattern, timeout=10.0):
        """Wait for a ternd log line matching pattern; returns the match."""
        rx = re.compile(pattern)
        return self.wait(lambda: rx.search(self.log()), "ternd to log /%s/" % pattern, timeout)

    def wait_status(self, to, pattern, timeout=10.0):
        """Wait for ternd's delivery line for `to` matching pattern; any
        other sent/bounced/deferred line for `to` fails at once."""
        rx = re.compile(pattern)
        other = re.compile(r".*: to=<%s>, .*status=(?:sent|bounced|deferred) .*" % re.escape(to))

        def check():
            log = self.log()
            m = rx.search(log)
            if m:
                return m
            for line in other.finditer(log):
                raise AssertionError(self.explain(
                    "expected a ternd log line for <%s> matching\n  %s\nbut ternd logged\n  %s"
                    % (to, pattern, line.group(0))))
            return None
        return self.wait(check, "ternd's delivery line for <%s> /%s/" % (to, pattern), timeout)

    def tern_box(self, address):
        return self.mail / TERN_MAILBOXES[address].rstrip("/") / "new"

    def pf_box(self, address):
        return self.pf.maildir(address) / "new"

    @staticmethod
    def files(new):
        """The messages (bytes) in a maildir's new/, oldest first."""
        paths = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)) \
            if new.is_dir() else []
        return [p.read_bytes() for p in paths]

    def wait_files(self, new, n, timeout=10.0):
        """Wait until a maildir's new/ holds n messages; returns them."""
        self.wait(lambda: len(self.files(new)) >= n, "%d message(s) in %s" % (n, new), timeout)
        return self.files(new)

    def file_count(self, new):
        return len(list(new.iterdir())) if new.is_dir() else 0


@pytest.fixture
def interop(request, config_dir, start_program, tmp_path):
    """Postfix and ternd started and wired to each other; Postfix is always
    stopped at teardown (postfix stop, abort, SIGKILL to its master), and a
    failed test's report carries Postfix's maillog, queue and config."""
    pm = request.config.pluginmanager
    if not pm.has_plugin("tern-interop-report"):
        pm.register(_ReportPostfix(), "tern-interop-report")
    world = Interop(config_dir, start_program, tmp_path)
    request.node.stash[WORLD_KEY] = world
    try:
        world.start()
        yield world
    finally:
        note = world.pf.stop()
        print("postfix instance %s: %s" % (world.pf.dir, note))


class _ReportPostfix:
    """Adds the Postfix instance's diagnostics to a failed test's report
    (taken while it still runs: the report is made before teardown)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        rep = outcome.get_result()
        world = item.stash.get(WORLD_KEY, None)
        if rep.failed and world is not None and call.when == "call":
            try:
                rep.sections.append(("postfix instance %s" % world.pf.dir,
                                     world.pf.diagnostics()))
            except Exception as e:          # never hide the real failure
                rep.sections.append(("postfix instance", "no diagnostics: %r" % e))


# --- log lines and messages -----------------------------------------------------

def delivery_re(to, relay, dsn, status, text, qid=QID):
    """Postfix's log_adhoc() line (ternd's and Postfix's own); group 1 is the
    queue ID. relay, dsn and text are regexes."""
    return (r"(%s): to=<%s>, relay=%s(?:, conn_use=\d+)?, delay=[0-9.]+, "
            r"delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=%s, status=%s \(%s\)" % (
                qid, re.escape(to), relay, dsn, status, text))


def loopback_relay(port):
    """relay=127.0.0.1[127.0.0.1]:PORT: a [127.0.0.1]:PORT nexthop."""
    return re.escape("127.0.0.1[127.0.0.1]:%d" % port)


def split_delivered(raw, return_path, delivered_to):
    """A maildir file as written by a virtual delivery: Return-Path:,
    X-Original-To: (Postfix's) and Delivered-To:, then the two Received:
    headers the hops prepended, then the message. Returns (first Received,
    second Received, both unfolded, and the rest as bytes)."""
    m = re.match(rb"Return-Path: <%s>\n(?:X-Original-To: %s\n)?Delivered-To: %s\n"
                 rb"(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)"
                 rb"(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)" % (
                     re.escape(return_path.encode()), re.escape(delivered_to.encode()),
                     re.escape(delivered_to.encode())), raw)
    assert m, ("expected Return-Path: <%s>, (X-Original-To:,) Delivered-To: %s and two "
               "Received: headers at the top of\n%s"
               % (return_path, delivered_to, raw.decode("utf-8", "replace")))
    unfold = [re.sub(r"\s+", " ", m.group(i).decode()).strip() for i in (1, 2)]
    return unfold[0], unfold[1], raw[m.end():]


def received_by_pf(header, helo, qid, rcpt=None):
    """Postfix's smtpd Received: header (smtpd_received_header): from HELO
    (localhost [127.0.0.1]) by mx.pf.test (Postfix) with ESMTP id QID
    [for <rcpt>]; DATE."""
    rx = (r"Received: from %s \(localhost \[127\.0\.0\.1\]\) by %s \(Postfix\) with ESMTP "
          r"id %s%s; .+" % (re.escape(helo), re.escape(PF_HOST), re.escape(qid),
                           " for <%s>" % re.escape(rcpt) if rcpt else ""))
    assert re.fullmatch(rx, header), \
        "Postfix's Received: header %r does not match %r" % (header, rx)


def received_by_tern(header, helo, qid):
    """ternd's Received: header: from HELO (... [127.0.0.1]) by tern.test
    ... id QID ...; DATE."""
    rx = (r"Received: from %s \([^()]*\[127\.0\.0\.1\]\) by tern\.test \(.*\) with E?SMTP\S* "
          r"id %s\b.*; .+" % (re.escape(helo), re.escape(qid)))
    assert re.fullmatch(rx, header), "ternd's Received: header %r does not match %r" % (header, rx)


def one_line(value):
    return " ".join(str(value or "").split())


def rfc822(field):
    """"rfc822; u@x" -> "u@x" (type checked, spacing ignored)."""
    kind, _, addr = (field or "").partition(";")
    assert kind.strip().lower() == "rfc822", field
    return addr.strip()


# --- A: ternd relays to Postfix ----------------------------------------------------

MSG_A = ("From: Sender <sender@tern.test>\r\n"
         "To: user@pf.test, other@pf.test\r\n"
         "Subject: interop A\r\n"
         "Date: Fri, 21 Nov 2025 10:00:00 +0000\r\n"
         "Message-ID: <interop-a@client.example>\r\n"
         "MIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: 8bit\r\n"
         "\r\n"
         "first line\r\n"
         ".leading dot\r\n"
         "..two dots\r\n"
         ".\r\n"
         "Grüße aus Köln – ½ € 🙂\r\n"
         "last line\r\n").encode("utf-8")


def test_ternd_relays_to_postfix(interop):
    pf = interop.pf
    rcpts = ["user@pf.test", "other@pf.test"]
    with smtplib.SMTP("127.0.0.1", interop.cfg.smtp_port, timeout=15) as s:
        s.ehlo("client.example")
        assert s.has_extn("dsn") and s.has_extn("8bitmime"), s.esmtp_features
        code, text = s.mail(SENDER, ["BODY=8BITMIME", "RET=HDRS", "ENVID=interop-a"])
        assert code == 250, (code, text)
        for rcpt in rcpts:
            code, text = s.rcpt(rcpt, ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;%s" % rcpt])
            assert code == 250, (rcpt, code, text)
        code, text = s.data(MSG_A)
        assert code == 250, (code, text)
        tern_qid = re.search(rb"queued as (\S+)", text).group(1).decode()

    # ternd: both recipients sent in one transaction, Postfix's reply logged.
    pf_qids = []
    for rcpt in rcpts:
        m = interop.wait_status(rcpt, delivery_re(
            rcpt, loopback_relay(pf.port), r"2\.0\.0", "sent",
            r"250 2\.0\.0 Ok: queued as (%s)" % QID, qid=tern_qid))
        pf_qids.append(m.group(2))
    assert pf_qids[0] == pf_qids[1], "one SMTP transaction for both recipients: %r" % pf_qids
    pf_qid = pf_qids[0]
    interop.wait_log(r"%s: removed" % tern_qid)

    # Postfix: what ternd said on the wire (smtpd logs each command from
    # 127.0.0.1), and its own deliveries of that queue ID.
    pf.wait_log(r"%s: client=localhost\[127\.0\.0\.1\]" % pf_qid)
    for rcpt in rcpts:
        pf.wait_log(delivery_re(rcpt, "virtual", r"2\.0\.0", "sent",
                                r"delivered to maildir", qid=pf_qid))
    log = pf.maillog()
    ehlo = re.findall(r"< localhost\[127\.0\.0\.1\]: (?:EHLO|HELO) (\S+)", log)
    assert ehlo == ["tern.test"], "ternd must EHLO as $myhostname: %r" % ehlo
    [mail] = re.findall(r"< localhost\[127\.0\.0\.1\]: (MAIL FROM:.*)", log)
    assert re.match(r"MAIL FROM:<sender@tern\.test>( |$)", mail), mail
    params = mail.split()[2:]
    assert "BODY=8BITMIME" in params, "8-bit body: BODY=8BITMIME expected: %r" % mail
    assert "RET=HDRS" in params and "ENVID=interop-a" in params, "DSN passed on: %r" % mail
    assert any(re.fullmatch(r"SIZE=\d+", p) for p in params), mail
    rcpt_cmds = re.findall(r"< localhost\[127\.0\.0\.1\]: (RCPT TO:.*)", log)
    assert sorted(rcpt_cmds) == sorted(
        "RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;%s" % (r, r) for r in rcpts), rcpt_cmds

    # Postfix's maildirs: its Received:, ternd's Received:, the message as sent.
    for rcpt in rcpts:
        [raw] = interop.wait_files(interop.pf_box(rcpt), 1)
        first, second, rest = split_delivered(raw, SENDER, rcpt)
        received_by_pf(first, "tern.test", pf_qid)
        received_by_tern(second, "client.example", tern_qid)
        assert rest == MSG_A.replace(b"\r\n", b"\n"), (
            "the original header and body (dot lines, 8-bit text) must arrive unchanged:\n%r"
            % rest)

    # NOTIFY=SUCCESS reached Postfix: its "delivered" report comes back to
    # the sender through ternd. Postfix speaks DSN, so ternd sends no
    # "relayed" notice of its own.
    box = interop.tern_box(SENDER)

    def postfix_reports():
        found = {}
        for raw in interop.files(box):
            msg, per_msg, per_rcpt = parse_report_bytes(raw)
            for r in per_rcpt:
                found[rfc822(r.get("Final-Recipient"))] = (msg, per_msg, r)
        return found if set(found) >= set(rcpts) else None
    found = interop.wait(postfix_reports, "Postfix's success notices for %r in %s" % (rcpts, box))
    for rcpt in rcpts:
        msg, per_msg, r = found[rcpt]
        where = msg.as_string()
        assert one_line(per_msg.get("Reporting-MTA")) == "dns; %s" % PF_HOST, where
        assert one_line(per_msg.get("Original-Envelope-Id")) == "interop-a", where
        assert r.get("Action") == "delivered" and r.get("Status") == "2.0.0", where
        assert rfc822(r.get("Original-Recipient")) == rcpt, where
        assert any(p.get_content_type() == "text/rfc822-headers" for p in msg.walk()), \
            "RET=HDRS: headers only; " + where
    interop.wait_log(r"(%s): to=<%s>, relay=virtual, .*status=sent" % (QID, re.escape(SENDER)))
    pf.wait_log(r"%s: sender delivery status notification: %s" % (pf_qid, QID))
    time.sleep(1.5)         # a "relayed" notice would have come by now
    reporters = [one_line(parse_report_bytes(raw)[1].get("Reporting-MTA"))
                 for raw in interop.files(box)]
    assert reporters == ["dns; %s" % PF_HOST] * len(reporters), (
        "only Postfix's notices expected, ternd sent one too: %r" % reporters)
    assert not re.search(r"%s: sender delivery status notification" % tern_qid, interop.log())


# --- B: Postfix relays to ternd ------------------------------------------------------

MSG_B = ("From: Someone <someone@client.example>\r\n"
         "To: user@tern.test\r\n"
         "Subject: interop B\r\n"
         "Date: Fri, 21 Nov 2025 10:00:00 +0000\r\n"
         "Message-ID: <interop-b@client.example>\r\n"
         "\r\n"
         "hello from Postfix\r\n"
         ".leading dot\r\n"
         ".\r\n"
         "last line\r\n")


def test_postfix_relays_to_ternd(interop):
    pf = interop.pf
    rcpt = "user@tern.test"
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=15) as s:
        s.ehlo("client.example")
        code, text = s.mail("someone@client.example")
        assert code == 250, (code, text)
        code, text = s.rcpt(rcpt)
        assert code == 250, (code, text)
        code, text = s.data(MSG_B)
        assert code == 250, (code, text)
        pf_qid = re.search(rb"queued as (\S+)", text).group(1).decode()

    # Postfix's smtp client logs ternd's reply, with ternd's queue ID.
    m = pf.wait_log(delivery_re(rcpt, loopback_relay(interop.cfg.smtp_port), r"2\.0\.0", "sent",
                                r"250 2\.0\.0 Ok: queued as (%s)" % QID, qid=pf_qid))
    tern_qid = m.group(2)
    pf.wait_log(r"%s: removed" % pf_qid)
    log = pf.maillog()
    # Postfix's client side of the session (smtp logs what it sends).
    assert re.search(r"> 127\.0\.0\.1\[127\.0\.0\.1\]:%d: MAIL FROM:<someone@client\.example>"
                     % interop.cfg.smtp_port, log), "Postfix's MAIL FROM to ternd not logged"

    # ternd: received from Postfix, delivered to the virtual maildir.
    interop.wait_log(r"%s: client=localhost\[127\.0\.0\.1\]" % tern_qid)
    interop.wait_status(rcpt, delivery_re(rcpt, "virtual", r"2\.0\.0", "sent",
                                          r"delivered to maildir", qid=tern_qid))
    interop.wait_log(r"%s: removed" % tern_qid)
    [raw] = interop.wait_files(interop.tern_box(rcpt), 1)
    first, second, rest = split_delivered(raw, "someone@client.example", rcpt)
    received_by_tern(first, PF_HOST, tern_qid)                          # the last hop on top
    received_by_pf(second, "client.example", pf_qid, rcpt=rcpt)
    assert rest == MSG_B.replace("\r\n", "\n").encode(), \
        "the original header and body must arrive unchanged:\n%r" % rest
    assert interop.file_count(interop.tern_box(SENDER)) == 0, "no notices expected"


# --- C: Postfix refuses a recipient ---------------------------------------------------

MSG_C = ("From: Sender <sender@tern.test>\r\n"
         "To: user@pf.test, nobody@pf.test\r\n"
         "Subject: interop C\r\n"
         "Date: Fri, 21 Nov 2025 10:00:00 +0000\r\n"
         "Message-ID: <interop-c@client.example>\r\n"
         "\r\n"
         "one of us is unknown\r\n")
PF_REFUSAL = ("550 5.1.1 <nobody@pf.test>: Recipient address rejected: "
              "User unknown in virtual mailbox table")


def test_postfix_refuses_a_recipient(interop):
    pf = interop.pf
    # Submit at 0.6 s past a second, so that an arrival time kept in whole
    # seconds would show in the notice's delay= (checked below).
    time.sleep((1.6 - time.time() % 1.0) % 1.0)
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", interop.cfg.smtp_port, timeout=15) as s:
        s.ehlo("client.example")
        refused = s.sendmail(SENDER, ["user@pf.test", "nobody@pf.test"], MSG_C)
    assert not refused, "ternd refused recipients: %r" % refused
    d = interop.wait_log(r"(%s): to=<%s>, relay=virtual, delay=([0-9.]+), .*status=sent"
                         % (QID, re.escape(SENDER)))
    elapsed = time.monotonic() - t0

    relay = loopback_relay(pf.port)
    m = interop.wait_status("nobody@pf.test", delivery_re(
        "nobody@pf.test", relay, r"5\.1\.1", "bounced",
        re.escape("host 127.0.0.1[127.0.0.1] said: %s (in reply to RCPT TO command)" % PF_REFUSAL)))
    tern_qid = m.group(1)
    m = interop.wait_status("user@pf.test", delivery_re(
        "user@pf.test", relay, r"2\.0\.0", "sent", r"250 2\.0\.0 Ok: queued as (%s)" % QID,
        qid=tern_qid))
    pf_qid = m.group(2)

    # Postfix's side: the refusal, and the other recipient delivered.
    pf.wait_log(r"(?:NOQUEUE|%s): reject: RCPT from localhost\[127\.0\.0\.1\]: %s; "
                r"from=<sender@tern\.test> to=<nobody@pf\.test> proto=ESMTP helo=<tern\.test>"
                % (QID, re.escape(PF_REFUSAL)))
    pf.wait_log(delivery_re("user@pf.test", "virtual", r"2\.0\.0", "sent",
                            r"delivered to maildir", qid=pf_qid))
    [raw] = interop.wait_files(interop.pf_box("user@pf.test"), 1)
    assert raw.endswith(b"\n\none of us is unknown\n"), raw

    # ternd's non-delivery notice to the sender, from <> into its maildir.
    n = interop.wait_log(r"%s: sender non-delivery notification: (%s)" % (tern_qid, QID))
    interop.wait_status(SENDER, delivery_re(SENDER, "virtual", r"2\.0\.0", "sent",
                                            r"delivered to maildir", qid=n.group(1)))
    assert d.group(1) == n.group(1), d.group(0)
    interop.wait_log(r"%s: removed" % tern_qid)
    [raw] = interop.wait_files(interop.tern_box(SENDER), 1)
    msg, per_msg, per_rcpt = parse_report_bytes(raw)
    where = raw.decode("utf-8", "replace")
    assert one_line(per_msg.get("Reporting-MTA")) == "dns; tern.test", where
    assert [rfc822(r.get("Final-Recipient")) for r in per_rcpt] == ["nobody@pf.test"], \
        "only the refused recipient is reported; " + where
    [r] = per_rcpt
    assert r.get("Action") == "failed", where
    assert r.get("Status") == "5.1.1", where
    assert one_line(r.get("Remote-MTA")) == "dns; 127.0.0.1", where
    assert one_line(r.get("Diagnostic-Code")) == "smtp; " + PF_REFUSAL, where
    # The original message comes back whole (no RET: Postfix returns the
    # full message up to bounce_size_limit).
    returned = [p for p in msg.walk() if p.get_content_type() == "message/rfc822"]
    assert len(returned) == 1, where
    assert "Subject: interop C" in returned[0].as_string(), where
    assert "one of us is unknown" in returned[0].as_string(), where
    time.sleep(1.0)
    assert interop.file_count(interop.tern_box(SENDER)) == 1, "one notice only"
    # The notice's delay= counts from its arrival, after t0, so it cannot
    # exceed the time from t0 until it was logged. Postfix keeps arrival
    # times to the microsecond, also for the notices its bounce daemon
    # queues (its success notice in test A logs e.g. delay=0.03).
    assert float(d.group(2)) <= elapsed + 0.05, (
        "the notice was queued and delivered within %.2fs of the submission, yet logged "
        "delay=%s:\n%s" % (elapsed, d.group(2), d.group(0)))
