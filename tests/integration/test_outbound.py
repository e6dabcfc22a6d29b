"""test_outbound.py - ternd as a relay: outbound SMTP and LMTP delivery
seen from the outside (issue 4).

ternd accepts mail from the test client (mynetworks) and relays it to
fake remote servers (fakesmtp.FakeSMTP) on loopback: "MX hosts" are A
records on distinct loopback addresses (mx1.remote.test = 127.0.0.2,
mx2.remote.test = 127.0.0.3) served by dnsmasq, all listening on one
free port P, and transport_maps routes `remote.test smtp:remote.test:P`
(transport(5): MX lookup for remote.test, connect to port P; `[host]:P`
would skip the MX lookup). The sender is a virtual mailbox on ternd
(everything @example.test goes to one maildir), so non-delivery and
"relayed" notices land there and are parsed with the email package.

Covers: MX delivery with the envelope and a prepended Received:, MX
preference, fallback to the next MX (connection refused, 421 greeting),
every MX refused, null MX and its RFC 3464 bounce, relayhost without MX
lookup, the transport(5) forms (smtp:[addr]:port, lmtp:inet:, lmtp:unix:,
error:, retry:, discard:), partial recipient failures in one transaction,
defer then success on retry, expiry to a bounce, LMTP per-recipient
replies after DATA, destination concurrency and recipient limits, NOTIFY
(NEVER, ORCPT/RET/ENVID passed on, "relayed" when the next hop lacks
DSN), delivery pause/resume and flush. Log lines are Postfix's
log_adhoc() shape (reference/postfix.md §5); the test_fakesmtp_* tests
check the fake server itself.
"""

import email
import email.utils
import re
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

import harness
from fakesmtp import FakeSMTP

MX1, MX2 = "127.0.0.2", "127.0.0.3"
SENDER = "sender@example.test"
MSG = ("From: Sender <sender@example.test>\r\n"
       "To: u@remote.test\r\n"
       "Subject: hello\r\n"
       "Date: Thu, 20 Nov 2025 10:00:00 +0000\r\n"
       "Message-ID: <outbound-test@client.example>\r\n"
       "\r\n"
       "body line\r\n"
       ".leading dot\r\n"
       "last line\r\n")
# Retries within seconds (postconf(5) names); queue_run_delay 1s.
FAST_RETRY = dict(minimal_backoff_time="1s", maximal_backoff_time="2s", queue_run_delay="1s")


# --- log lines ---------------------------------------------------------------

def delivery_re(to, relay, dsn, status, text, service=None, qid="[0-9A-F]+"):
    """Postfix's log_adhoc() line; group 1 is the queue ID. relay, dsn and
    text are regexes; service ("smtp", "lmtp") pins tern/SERVICE[pid]."""
    prefix = r"tern/%s\[\d+\]: " % service if service else ""
    return (r"%s(%s): to=<%s>, relay=%s(?:, conn_use=\d+)?, delay=[0-9.]+, "
            r"delays=[0-9.]+/[0-9.]+/[0-9.]+/[0-9.]+, dsn=%s, status=%s \(%s\)" % (
                prefix, qid, re.escape(to), relay, dsn, status, text))


def hostport(name, addr, port):
    """relay=NAME[ADDR]:PORT as a regex."""
    return re.escape("%s[%s]:%d" % (name, addr, port))


def said(name, addr, reply, command):
    """Postfix's remote-reply reason: host NAME[ADDR] said: REPLY (in reply
    to COMMAND command)."""
    return re.escape("host %s[%s] said: %s (in reply to %s command)" % (name, addr, reply, command))


# --- the relay under test ------------------------------------------------------

class Outbound:
    """One test's world: fake servers (.fake()), dnsmasq, ternd relaying
    with the sender's maildir (.box), and helpers to send and to wait for
    log lines, notices and fake deliveries with clear failure messages."""

    def __init__(self, cfg, start_program, dns_factory):
        self.cfg, self._start_program, self._dns_factory = cfg, start_program, dns_factory
        self.port = harness.free_port()
        self.fakes, self.runs, self.dns, self.box = [], [], None, None

    def fake(self, host=MX1, port=None, **kw):
        """A started FakeSMTP on host:port (default the shared port P)."""
        f = FakeSMTP(host, self.port if port is None else port, **kw).start()
        self.fakes.append(f)
        return f

    def start(self, transport=None, mx=None, a=None, **settings):
        """Start dnsmasq with the remote.test zone (mx/a override it), and
        ternd with the transport table {domain: "transport:nexthop"}
        (default: remote.test over MX on port P), the fast retry settings
        and `settings`."""
        if mx is None:
            mx = {"remote.test": [(10, "mx1.remote.test")]}
        if a is None:
            a = {"mx1.remote.test": [MX1], "mx2.remote.test": [MX2]}
        self.dns = self._dns_factory(mx=mx, a=a)
        if transport is None:
            transport = {"remote.test": "smtp:remote.test:%d" % self.port}
        table = self.cfg.write_table("transport", "".join(
            "%s %s\n" % item for item in transport.items()))
        conf = dict(FAST_RETRY, mynetworks="127.0.0.0/8",
                    transport_maps="texthash:%s" % table if transport else "")
        conf.update(settings)
        self.box = self.cfg.use_virtual_box(**conf)
        self.cfg.use_dns(self.dns)
        return self.start_ternd()

    def start_ternd(self):
        argv = [str(harness.tern_bin("ternd")), "-f", "-c", str(self.cfg)]
        prog = self._start_program(argv, ready=self.cfg.smtp_port, name="ternd")
        self.runs.append(prog)
        return prog

    def log(self):
        """Everything ternd logged: the maillog_file, else its stderr (-f)."""
        return self.cfg.maillog() + "".join(p.stderr() for p in self.runs)

    def tern(self, *args):
        return harness.run_tern(*args, config_dir=self.cfg, check=True)[1]

    def queue_list(self):
        return self.tern("queue", "list")

    def send(self, rcpts, msg=MSG, sender=SENDER, mail_options=(), rcpt_options=()):
        """Submit one message to ternd; every recipient must be accepted."""
        with smtplib.SMTP("127.0.0.1", self.cfg.smtp_port, timeout=15) as s:
            s.ehlo("client.example")
            refused = s.sendmail(sender, rcpts, msg, list(mail_options), list(rcpt_options))
        assert not refused, "ternd refused recipients: %r" % refused

    # -- waiting ---------------------------------------------------------------

    def _explain(self, what):
        return "%s\n%s" % (what, "\n".join(f.describe() for f in self.fakes))

    def wait(self, predicate, what, timeout=10.0):
        """Poll predicate() (fail at once if ternd has no transport for
        the mail: it defers with "mail transport unavailable")."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            m = re.search(r".*status=deferred \(mail transport unavailable\).*", self.log())
            if m:
                raise AssertionError(self._explain(
                    "ternd has no transport for this mail (waiting for %s):\n  %s"
                    % (what, m.group(0))))
            if time.monotonic() >= deadline:
                raise AssertionError(self._explain(
                    "timed out after %.0fs waiting for %s" % (timeout, what)))
            time.sleep(0.05)

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        return self.wait(lambda: rx.search(self.log()), "log line /%s/" % pattern, timeout)

    def wait_status(self, to, pattern, transient=False, timeout=10.0):
        """Wait for the delivery line for `to` matching pattern; returns
        the match. Any other delivery line for `to` fails at once, showing
        it -- only sent/bounced ones when transient (deferrals expected on
        the way)."""
        rx = re.compile(pattern)
        other = re.compile(r".*: to=<%s>, .*status=(%s) .*" % (
            re.escape(to), "sent|bounced" if transient else "sent|bounced|deferred"))

        def check():
            log = self.log()
            m = rx.search(log)
            if m:
                return m
            for line in other.finditer(log):
                if not rx.search(line.group(0)):
                    raise AssertionError(self._explain(
                        "expected a log line for <%s> matching\n  %s\nbut ternd logged\n  %s" % (
                            to, pattern, line.group(0))))
            return None
        return self.wait(check, "delivery to <%s> /%s/" % (to, pattern), timeout)

    def wait_fake(self, fake, n, timeout=10.0):
        """Wait until `fake` accepted n messages; returns its messages."""
        self.wait(lambda: len(fake.messages) >= n, "%d message(s) at fake %s" % (n, fake.address),
                  timeout)
        return list(fake.messages)

    def notices(self, n, timeout=10.0):
        """Wait for n messages in the sender's maildir; returns them parsed
        as (message, per-message DSN fields, [per-recipient fields])."""
        new = self.box / "new"
        self.wait(lambda: new.is_dir() and len(list(new.iterdir())) >= n,
                  "%d notice(s) in the sender's maildir %s" % (n, new), timeout)
        return [parse_report(p) for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime)]

    def notice_count(self):
        new = self.box / "new"
        return len(list(new.iterdir())) if new.is_dir() else 0


@pytest.fixture
def outbound(config_dir, start_program, dns):
    world = Outbound(config_dir, start_program, dns)
    yield world
    for f in world.fakes:
        f.stop()
        print(f.describe())        # shown with the report when the test fails
        assert not f.errors, "fake server errors: %r" % f.errors


# --- delivery status notifications ----------------------------------------------

def parse_report(path):
    """Parse an RFC 3464 report from a maildir file and check what every
    notice must have, ternd's Reporting-MTA and a recent Arrival-Date
    included; returns (msg, per-message fields, [per-recipient])."""
    msg, per_msg, per_rcpt = parse_report_bytes(Path(path).read_bytes(), str(path))
    where = "notice %s:\n%s" % (path, msg.as_string())
    assert re.fullmatch(r"dns;\s*tern\.test", per_msg.get("Reporting-MTA", "")), where
    arrival = email.utils.parsedate_to_datetime(per_msg.get("Arrival-Date"))
    assert abs(time.time() - arrival.timestamp()) < 600, where
    return msg, per_msg, per_rcpt


def parse_report_bytes(raw, name="notice"):
    """The checks every RFC 3464 notice must pass, whoever reports
    (multipart/report from MAILER-DAEMON with the null sender, one
    message/delivery-status part with per-recipient fields)."""
    msg = email.message_from_bytes(raw)
    where = "%s:\n%s" % (name, raw.decode("utf-8", "replace"))
    assert msg.get_content_type() == "multipart/report", where
    assert msg.get_param("report-type") == "delivery-status", where
    assert "MAILER-DAEMON" in msg.get("From", ""), where
    assert msg.get("Return-Path") == "<>", "null envelope sender expected; " + where
    reports = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(reports) == 1, where
    blocks = reports[0].get_payload()
    assert len(blocks) >= 2, "no per-recipient fields; " + where
    return msg, blocks[0], blocks[1:]


def rfc822(field):
    """"rfc822; u@x" -> "u@x" (type checked, spacing ignored)."""
    kind, _, addr = (field or "").partition(";")
    assert kind.strip().lower() == "rfc822", field
    return addr.strip()


# --- the fake server itself (must pass without ternd) ---------------------------

def test_fakesmtp_smtp_session():
    rcpt_reply = {"bad@x.test": "550 5.1.1 <bad@x.test>: unknown user"}
    with FakeSMTP("127.0.0.1", harness.free_port(), rcpt_reply=rcpt_reply) as fake:
        with smtplib.SMTP("127.0.0.1", fake.port, timeout=5) as s:
            code, _ = s.ehlo("client.example")
            assert code == 250
            for kw in ("pipelining", "8bitmime", "enhancedstatuscodes", "dsn", "smtputf8"):
                assert s.has_extn(kw), kw
            assert s.esmtp_features["size"] == "10240000"
            refused = s.sendmail("a@b.test", ["ok@x.test", "bad@x.test", "ok2@x.test"], MSG,
                                 ["RET=HDRS", "ENVID=e1"],
                                 ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;o@x.test"])
            assert refused == {"bad@x.test": (550, b"5.1.1 <bad@x.test>: unknown user")}
            s.sendmail("", ["ok@x.test"], "Subject: second\r\n\r\nx\r\n")
        fake.wait(lambda: fake.connections[0]["closed"], what="connection closed")
        assert len(fake.messages) == 2 and len(fake.transactions) == 2
        m = fake.messages[0]
        assert m["helo"] == "client.example" and m["sender"] == "a@b.test"
        assert m["mail_params"]["RET"] == "HDRS" and m["mail_params"]["ENVID"] == "e1"
        assert m["rcpts"] == ["ok@x.test", "ok2@x.test"] == m["delivered"]
        assert m["rcpt_params"] == [{"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;o@x.test"}] * 2
        assert [r[0] for r in m["rcpts_tried"]] == ["ok@x.test", "bad@x.test", "ok2@x.test"]
        assert m["data"] == MSG.encode()          # dot-stuffing undone
        assert re.fullmatch(r"250 2\.0\.0 Ok: queued as FAKE\d+", m["data_reply"])
        assert fake.messages[1]["sender"] == ""
        assert len(fake.connections) == 1 and fake.max_concurrent == 1
        assert fake.connections[0]["commands"][-1] == "QUIT"
    assert not harness.port_accepts(fake.port)


def _raw_session(address, lines, nreplies, family=socket.AF_INET):
    """Send `lines` in one write (pipelining) and read nreplies replies."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(address)
        f = s.makefile("rb")
        replies = [harness.smtp_read_reply(f)]
        s.sendall("".join(l + "\r\n" for l in lines).encode())
        replies += [harness.smtp_read_reply(f) for _ in range(nreplies)]
        return replies


def test_fakesmtp_pipelining_and_scripts():
    answers = iter(["451 4.3.0 try again"])
    fake = FakeSMTP("127.0.0.2", harness.free_port(), fail_first_n_connections=1,
                    rcpt_reply=lambda a: "450 4.2.1 busy" if a.startswith("busy") else "250 Ok",
                    data_reply=lambda txn: next(answers, "250 2.0.0 Ok: fine"),
                    delay_seconds=0.3)
    with fake:
        # 1st connection: scripted 421 greeting.
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP("127.0.0.2", fake.port, timeout=5)
        assert e.value.smtp_code == 421
        # 2nd: everything pipelined in one write, replies in order.
        body = ["Subject: p", "", "..dot stuffed", "x"]
        replies = _raw_session(("127.0.0.2", fake.port), [
            "EHLO pipe.test", "MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME",
            "RCPT TO:<x@y.test>", "RCPT TO:<busy@y.test>", "DATA"] + body + [".",
            "MAIL FROM:<a@b.test>", "RCPT TO:<z@y.test>", "DATA", "z", ".", "QUIT"], 11)
        assert [c for c, _ in replies] == \
            [220, 250, 250, 250, 450, 354, 451, 250, 250, 354, 250, 221]
        assert replies[1][1][0] == "fake" and "PIPELINING" in replies[1][1]
        fake.wait(lambda: len(fake.transactions) == 2 and fake.transactions[1]["completed"],
                  what="two transactions")
        first, second = fake.transactions
        assert first["mail_params"] == {"SIZE": "100", "BODY": "8BITMIME"}
        assert first["rcpts"] == ["x@y.test"] and first["delivered"] == []
        assert first["data"] == b"Subject: p\r\n\r\n.dot stuffed\r\nx\r\n"
        assert first["data_reply"] == "451 4.3.0 try again"
        assert [m["rcpts"] for m in fake.messages] == [["z@y.test"]]
        assert second["helo"] == "pipe.test"
        assert fake.connections[0]["failed"] == "421"
        assert fake.connections[0]["local"] == ("127.0.0.2", fake.port)
        # Two sessions open and in use at once count as two.
        a = smtplib.SMTP("127.0.0.2", fake.port, timeout=5)
        b = smtplib.SMTP("127.0.0.2", fake.port, timeout=5)
        a.ehlo("a"), b.ehlo("b")
        a.quit(), b.quit()
        assert fake.max_concurrent == 2 and fake.max_concurrent_transactions == 1
        # delay_seconds applies to the end-of-data reply only (default).
        start = time.monotonic()
        with smtplib.SMTP("127.0.0.2", fake.port, timeout=5) as s:
            connected = time.monotonic()
            s.sendmail("a@b.test", ["d@y.test"], "Subject: d\r\n\r\nd\r\n")
            assert time.monotonic() - connected >= 0.3 and connected - start < 0.3
    with FakeSMTP("127.0.0.1", harness.free_port(), fail_first_n_connections=1,
                  fail_mode="reset") as fake:
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            smtplib.SMTP("127.0.0.1", fake.port, timeout=5)
        with smtplib.SMTP("127.0.0.1", fake.port, timeout=5) as s:
            assert s.noop()[0] == 250
        assert fake.connections[0]["failed"] == "reset" and fake.connections[1]["failed"] is None


def test_fakesmtp_lmtp(tmp_path):
    replies = {"b@l.test": "452 4.2.2 <b@l.test> Mailbox full"}
    with FakeSMTP(lmtp=True, unix_path=tmp_path / "lmtp.sock", data_reply=replies) as fake:
        assert (tmp_path / "lmtp.sock").stat().st_mode & 0o777 == 0o666
        got = _raw_session(str(tmp_path / "lmtp.sock"), [
            "EHLO x", "LHLO l.test", "MAIL FROM:<s@x.test>", "RCPT TO:<a@l.test>",
            "RCPT TO:<b@l.test>", "DATA", "hi", ".", "QUIT"], 9, socket.AF_UNIX)
        assert [c for c, _ in got] == [220, 500, 250, 250, 250, 250, 354, 250, 452, 221]
        assert got[0][1] == ["fake LMTP"]
        assert re.fullmatch(r"2\.0\.0 <a@l\.test> Ok: queued as FAKE\d+", got[7][1][0])
        assert got[8][1] == ["4.2.2 <b@l.test> Mailbox full"]
        m = fake.wait_messages(1)[0]
        assert m["rcpts"] == ["a@l.test", "b@l.test"] and m["delivered"] == ["a@l.test"]
        assert m["data"] == b"hi\r\n" and m["helo"] == "l.test"
        with smtplib.LMTP(str(tmp_path / "lmtp.sock")) as s:   # smtplib's own client
            assert s.ehlo_or_helo_if_needed() is None and s.has_extn("pipelining")
    assert not (tmp_path / "lmtp.sock").exists()
    with FakeSMTP("127.0.0.1", harness.free_port(), lmtp=True) as fake:
        with smtplib.SMTP("127.0.0.1", fake.port, timeout=5) as s:
            assert s.ehlo()[0] == 500       # an SMTP client is told off


# --- routing: MX, relayhost, transport(5) -------------------------------------------

def test_mx_delivery_envelope_and_content(outbound):
    mx1 = outbound.fake(MX1)
    outbound.start()
    outbound.send(["u@remote.test"])
    m = outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent",
        r"250 2\.0\.0 Ok: queued as FAKE\d+", service="smtp"))
    outbound.wait_log(r"%s: removed" % m.group(1))
    [msg] = outbound.wait_fake(mx1, 1)
    assert msg["helo"] == "tern.test", "EHLO must be smtp_helo_name ($myhostname)"
    assert msg["sender"] == SENDER and msg["rcpts"] == ["u@remote.test"]
    assert re.fullmatch(r"\d+", msg["mail_params"].get("SIZE") or ""), msg["mail_params"]
    data = msg["data"].decode()
    assert data.startswith("Received: from "), data
    # The Received: header (folded lines) then the message exactly as sent.
    first = re.match(r"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data).group(0)
    assert "tern.test" in first and m.group(1) in first, first
    assert data[len(first):] == MSG, "the original header and body must follow unchanged"
    assert "u@remote.test" not in outbound.queue_list()


def test_mx_preference_order(outbound):
    # The DNS lists the less preferred host first; preference decides.
    mx1, mx2 = outbound.fake(MX1), outbound.fake(MX2)
    outbound.start(mx={"remote.test": [(20, "mx2.remote.test"), (10, "mx1.remote.test")]})
    for i in range(3):
        outbound.send(["u%d@remote.test" % i])
    for i in range(3):
        outbound.wait_status("u%d@remote.test" % i, delivery_re(
            "u%d@remote.test" % i, hostport("mx1.remote.test", MX1, outbound.port),
            r"2\.0\.0", "sent", r"250 .*", service="smtp"))
    assert sorted(mx1.delivered()) == ["u0@remote.test", "u1@remote.test", "u2@remote.test"]
    assert mx2.connections == [], "the preference-20 MX must not be used:\n" + mx2.describe()


def test_mx_fallback_when_connection_refused(outbound):
    # Nothing listens on mx1 (127.0.0.2:P).
    mx2 = outbound.fake(MX2)
    outbound.start(mx={"remote.test": [(10, "mx1.remote.test"), (20, "mx2.remote.test")]})
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx2.remote.test", MX2, outbound.port), r"2\.0\.0", "sent",
        r"250 2\.0\.0 Ok: queued as FAKE\d+", service="smtp"))
    assert mx2.delivered() == ["u@remote.test"]


def test_mx_fallback_after_421_greeting(outbound):
    mx1 = outbound.fake(MX1, fail_first_n_connections=1000)     # always 421
    mx2 = outbound.fake(MX2)
    outbound.start(mx={"remote.test": [(10, "mx1.remote.test"), (20, "mx2.remote.test")]})
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx2.remote.test", MX2, outbound.port), r"2\.0\.0", "sent",
        r"250 .*", service="smtp"))
    assert mx2.delivered() == ["u@remote.test"]
    assert mx1.connections and all(c["failed"] == "421" for c in mx1.connections), \
        "mx1 (preference 10) must be tried first:\n" + mx1.describe()
    assert mx1.transactions == []


def test_every_mx_refused_is_deferred(outbound):
    outbound.start(mx={"remote.test": [(10, "mx1.remote.test"), (20, "mx2.remote.test")]})
    outbound.send(["u@remote.test"])
    # The reason names the last host tried.
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", "none", r"4\.4\.1", "deferred",
        re.escape("connect to mx2.remote.test[%s]:%d: Connection refused" % (MX2, outbound.port)),
        service="smtp"))
    assert "u@remote.test" in outbound.queue_list()


def test_null_mx_bounces_with_dsn(outbound):
    outbound.start(mx={"remote.test": [(0, ".")]})
    outbound.send(["u@remote.test"])
    m = outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", "none", r"5\.1\.10", "bounced",
        re.escape("Domain remote.test does not accept mail (nullMX)"), service="smtp"))
    qid = m.group(1)
    outbound.wait_log(r"%s: sender non-delivery notification: [0-9A-F]+" % qid)
    [(msg, per_msg, rcpts)] = outbound.notices(1)
    assert msg["To"] and SENDER in msg["To"]
    assert len(rcpts) == 1
    assert rfc822(rcpts[0]["Final-Recipient"]) == "u@remote.test"
    assert rcpts[0]["Action"] == "failed" and rcpts[0]["Status"] == "5.1.10"
    assert "does not accept mail" in msg.as_string()
    # The original's headers come back (message/rfc822 or text/rfc822-headers).
    orig = [p for p in msg.walk()
            if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
    assert orig and "Message-ID: <outbound-test@client.example>" in orig[0].as_string()
    time.sleep(0.5)
    assert outbound.notice_count() == 1, "one notice only"


def test_relayhost_without_mx_lookup(outbound):
    sink = outbound.fake("127.0.0.1")
    # nodns.test and other.test have no DNS records at all.
    outbound.start(transport={}, relayhost="[127.0.0.1]:%d" % outbound.port)
    outbound.send(["u@nodns.test", "v@other.test"])
    for rcpt in ("u@nodns.test", "v@other.test"):
        outbound.wait_status(rcpt, delivery_re(
            rcpt, hostport("127.0.0.1", "127.0.0.1", outbound.port), r"2\.0\.0", "sent",
            r"250 .*", service="smtp"))
    assert sorted(sink.delivered()) == ["u@nodns.test", "v@other.test"]
    queries = outbound.dns.program.output()
    assert "nodns.test" not in queries and "other.test" not in queries, \
        "no DNS lookups for a [host]:port relayhost:\n" + queries


def test_transport_smtp_bracketed_address(outbound):
    sink = outbound.fake("127.0.0.1")
    outbound.start(transport={"remote.test": "smtp:[127.0.0.1]:%d" % outbound.port})
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("127.0.0.1", "127.0.0.1", outbound.port), r"2\.0\.0", "sent",
        r"250 2\.0\.0 Ok: queued as FAKE\d+", service="smtp"))
    assert sink.delivered() == ["u@remote.test"]
    assert "remote.test" not in outbound.dns.program.output(), "[addr] means no MX lookup"


def test_transport_lmtp_inet(outbound):
    lmtp = outbound.fake("127.0.0.1", lmtp=True)
    outbound.start(transport={"lmtp.test": "lmtp:inet:127.0.0.1:%d" % outbound.port})
    outbound.send(["u@lmtp.test"])
    outbound.wait_status("u@lmtp.test", delivery_re(
        "u@lmtp.test", hostport("127.0.0.1", "127.0.0.1", outbound.port), r"2\.0\.0", "sent",
        r"250 2\.0\.0 <u@lmtp\.test> Ok: queued as FAKE\d+", service="lmtp"))
    [msg] = lmtp.messages
    assert msg["delivered"] == ["u@lmtp.test"] and msg["sender"] == SENDER
    assert msg["helo"] == "tern.test"
    assert msg["data"].endswith(MSG.encode())


def test_transport_lmtp_unix(outbound):
    # In the config dir, which harness made traversable for the tern user
    # (the fake makes the socket 0666).
    path = outbound.cfg.path / "lmtp.sock"
    assert len(str(path)) < 100, "unix socket path too long for sun_path: %s" % path
    lmtp = outbound.fake(lmtp=True, unix_path=path)
    outbound.start(transport={"lmtp.test": "lmtp:unix:%s" % path})
    outbound.send(["u@lmtp.test"])
    # Postfix names a unix socket relay as myhostname[/path].
    outbound.wait_status("u@lmtp.test", delivery_re(
        "u@lmtp.test", r"[^\s,\[]+\[%s\]" % re.escape(str(path)), r"2\.0\.0", "sent",
        r"250 2\.0\.0 <u@lmtp\.test> Ok: queued as FAKE\d+", service="lmtp"))
    assert lmtp.delivered() == ["u@lmtp.test"]


def test_transport_error_retry_discard(outbound):
    outbound.start(transport={"err.test": "error:5.7.1 go away", "later.test": "retry:4.4.1 later",
                              "gone.test": "discard:"})
    outbound.send(["u@err.test", "u@later.test", "u@gone.test"])
    outbound.wait_status("u@err.test", delivery_re(
        "u@err.test", "none", r"5\.7\.1", "bounced", "go away"))
    outbound.wait_status("u@later.test", delivery_re(
        "u@later.test", "none", r"4\.4\.1", "deferred", "later"))
    outbound.wait_status("u@gone.test", delivery_re(
        "u@gone.test", "none", r"2\.0\.0", "sent", r"gone\.test"))
    [(msg, _, rcpts)] = outbound.notices(1)
    assert [rfc822(r["Final-Recipient"]) for r in rcpts] == ["u@err.test"]
    assert rcpts[0]["Action"] == "failed" and rcpts[0]["Status"] == "5.7.1"
    assert "go away" in msg.as_string()
    listing = outbound.queue_list()
    assert "u@later.test" in listing, listing
    assert "u@err.test" not in listing and "u@gone.test" not in listing, listing


# --- per-recipient outcomes, retries, expiry ------------------------------------

def test_partial_recipient_failures(outbound):
    mx1 = outbound.fake(MX1, rcpt_reply={
        "b@remote.test": "450 4.2.1 <b@remote.test>: mailbox busy",
        "c@remote.test": "550 5.1.1 <c@remote.test>: unknown user"})
    outbound.start()
    outbound.send(["a@remote.test", "b@remote.test", "c@remote.test"])
    relay = hostport("mx1.remote.test", MX1, outbound.port)
    outbound.wait_status("a@remote.test", delivery_re(
        "a@remote.test", relay, r"2\.0\.0", "sent", r"250 .*", service="smtp"))
    outbound.wait_status("b@remote.test", delivery_re(
        "b@remote.test", relay, r"4\.2\.1", "deferred",
        said("mx1.remote.test", MX1, "450 4.2.1 <b@remote.test>: mailbox busy", "RCPT TO"),
        service="smtp"))
    outbound.wait_status("c@remote.test", delivery_re(
        "c@remote.test", relay, r"5\.1\.1", "bounced",
        said("mx1.remote.test", MX1, "550 5.1.1 <c@remote.test>: unknown user", "RCPT TO"),
        service="smtp"))
    first = mx1.transactions[0]
    assert sorted(r[0] for r in first["rcpts_tried"]) == \
        ["a@remote.test", "b@remote.test", "c@remote.test"], \
        "all three RCPTs in one transaction:\n" + mx1.describe()
    assert first["delivered"] == ["a@remote.test"]
    assert mx1.delivered() == ["a@remote.test"], "a delivered once"
    # b stays queued; a and c are done.
    outbound.wait(lambda: (lambda q: "b@remote.test" in q and "a@remote.test" not in q
                           and "c@remote.test" not in q)(outbound.queue_list()),
                  "only b@remote.test left in `tern queue list`")
    [(msg, _, rcpts)] = outbound.notices(1)
    assert [rfc822(r["Final-Recipient"]) for r in rcpts] == ["c@remote.test"], msg.as_string()
    assert rcpts[0]["Action"] == "failed" and rcpts[0]["Status"] == "5.1.1"
    assert re.fullmatch(r"dns;\s*mx1\.remote\.test", rcpts[0].get("Remote-MTA", "")), \
        msg.as_string()
    assert re.fullmatch(r"smtp;\s*550 5\.1\.1 <c@remote\.test>: unknown user",
                        rcpts[0].get("Diagnostic-Code", "")), msg.as_string()


def test_deferred_then_sent_on_retry(outbound):
    answers = iter(["451 4.3.0 Error: queue file write error"])
    mx1 = outbound.fake(MX1, data_reply=lambda txn: next(answers, "250 2.0.0 Ok: second try"))
    outbound.start()
    outbound.send(["u@remote.test"])
    relay = hostport("mx1.remote.test", MX1, outbound.port)
    m = outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", relay, r"4\.3\.0", "deferred",
        said("mx1.remote.test", MX1, "451 4.3.0 Error: queue file write error", "end of DATA"),
        service="smtp"), transient=True)
    qid = m.group(1)
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", relay, r"2\.0\.0", "sent", re.escape("250 2.0.0 Ok: second try"),
        service="smtp", qid=qid), transient=True)
    outbound.wait_log(r"%s: removed" % qid)
    assert outbound.queue_list() == "Mail queue is empty\n"
    assert [len(t["rcpts"]) for t in mx1.transactions] == [1, 1]
    assert mx1.delivered() == ["u@remote.test"]


def test_expired_mail_bounces_with_last_reason(outbound):
    outbound.fake(MX1, rcpt_reply="450 4.2.1 <u@remote.test>: mailbox busy")
    outbound.start(maximal_queue_lifetime="3s", bounce_queue_lifetime="3s")
    outbound.send(["u@remote.test"])
    m = outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"4\.2\.1", "deferred",
        said("mx1.remote.test", MX1, "450 4.2.1 <u@remote.test>: mailbox busy", "RCPT TO"),
        service="smtp"), transient=True)
    qid = m.group(1)
    outbound.wait_log(r"%s: from=<%s>, status=expired, returned to sender" % (
        qid, re.escape(SENDER)), timeout=20)
    [(msg, per_msg, rcpts)] = outbound.notices(1)
    assert [rfc822(r["Final-Recipient"]) for r in rcpts] == ["u@remote.test"]
    assert rcpts[0]["Action"] == "failed"
    # Postfix reports the last deferral reason, a 4.x.y status.
    assert rcpts[0]["Status"] == "4.2.1", msg.as_string()
    assert "mailbox busy" in msg.as_string()
    outbound.wait(lambda: outbound.queue_list() == "Mail queue is empty\n", "the queue empty")


def test_lmtp_per_recipient_replies_after_data(outbound):
    lmtp = outbound.fake("127.0.0.1", lmtp=True, data_reply={
        "a@lmtp.test": "250 2.0.0 <a@lmtp.test> Saved",
        "b@lmtp.test": "452 4.2.2 <b@lmtp.test> Mailbox full"})
    outbound.start(transport={"lmtp.test": "lmtp:inet:127.0.0.1:%d" % outbound.port})
    outbound.send(["a@lmtp.test", "b@lmtp.test"])
    relay = hostport("127.0.0.1", "127.0.0.1", outbound.port)
    outbound.wait_status("a@lmtp.test", delivery_re(
        "a@lmtp.test", relay, r"2\.0\.0", "sent", re.escape("250 2.0.0 <a@lmtp.test> Saved"),
        service="lmtp"))
    outbound.wait_status("b@lmtp.test", delivery_re(
        "b@lmtp.test", relay, r"4\.2\.2", "deferred",
        said("127.0.0.1", "127.0.0.1", "452 4.2.2 <b@lmtp.test> Mailbox full", "end of DATA"),
        service="lmtp"))
    first = lmtp.transactions[0]
    assert first["rcpts"] == ["a@lmtp.test", "b@lmtp.test"], lmtp.describe()
    assert first["delivered"] == ["a@lmtp.test"]
    outbound.wait(lambda: (lambda q: "b@lmtp.test" in q and "a@lmtp.test" not in q)(
        outbound.queue_list()), "only b@lmtp.test left in `tern queue list`")
    assert lmtp.delivered() == ["a@lmtp.test"], "a must not be delivered again on b's retry"


# --- limits ------------------------------------------------------------------

def test_destination_concurrency_limit(outbound):
    mx1 = outbound.fake(MX1, delay_seconds=0.2)          # slow end-of-DATA replies
    outbound.start(default_destination_concurrency_limit="2",
                   smtp_destination_concurrency_limit="2")
    errors = []

    def client(n):
        try:
            with smtplib.SMTP("127.0.0.1", outbound.cfg.smtp_port, timeout=20) as s:
                s.ehlo("client.example")
                for i in range(5):
                    s.sendmail(SENDER, ["u%d.%d@remote.test" % (n, i)], MSG)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rcpts = sorted("u%d.%d@remote.test" % (n, i) for n in range(4) for i in range(5))
    outbound.wait(lambda: len(mx1.delivered()) >= 20, "20 messages at the fake MX", timeout=30)
    for r in rcpts:
        outbound.wait_status(r, delivery_re(
            r, hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent", r"250 .*",
            service="smtp"))
    assert sorted(mx1.delivered()) == rcpts, "each message delivered exactly once"
    assert mx1.max_concurrent <= 2, "more than 2 connections in use at once:\n" + mx1.describe()
    assert mx1.max_concurrent_transactions <= 2


def test_destination_recipient_limit(outbound):
    mx1 = outbound.fake(MX1)
    outbound.start(default_destination_recipient_limit="2", smtp_destination_recipient_limit="2")
    rcpts = ["r%d@remote.test" % i for i in range(5)]
    outbound.send(rcpts)
    for r in rcpts:
        outbound.wait_status(r, delivery_re(
            r, hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent", r"250 .*",
            service="smtp"))
    assert sorted(len(t["rcpts_tried"]) for t in mx1.transactions) == [1, 2, 2], mx1.describe()
    assert sorted(mx1.delivered()) == rcpts
    assert all(t["data"].endswith(MSG.encode()) for t in mx1.transactions)


# --- DSN: NOTIFY, ORCPT, RET, ENVID ---------------------------------------------

def test_notify_never_suppresses_the_bounce(outbound):
    outbound.fake(MX1, rcpt_reply="550 5.1.1 <gone@remote.test>: unknown user")
    outbound.start()
    outbound.send(["gone@remote.test"], rcpt_options=["NOTIFY=NEVER"])
    m = outbound.wait_status("gone@remote.test", delivery_re(
        "gone@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"5\.1\.1", "bounced",
        said("mx1.remote.test", MX1, "550 5.1.1 <gone@remote.test>: unknown user", "RCPT TO"),
        service="smtp"))
    outbound.wait_log(r"%s: removed" % m.group(1))
    time.sleep(1.5)
    assert outbound.notice_count() == 0, "NOTIFY=NEVER: no notice to the sender"
    assert "non-delivery notification" not in outbound.log()


def test_dsn_passed_on_or_relayed_notice(outbound):
    dsn = outbound.fake(MX1)                                        # advertises DSN
    nodsn = outbound.fake(MX2, ehlo_keywords=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"))
    outbound.start(transport={"remote.test": "smtp:remote.test:%d" % outbound.port,
                              "nodsn.test": "smtp:[%s]:%d" % (MX2, outbound.port)})
    # 1. The next hop speaks DSN: the parameters go on, no notice here.
    outbound.send(["u@remote.test"], mail_options=["RET=HDRS", "ENVID=env-1"],
                  rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent",
        r"250 .*", service="smtp"))
    [t] = dsn.messages
    assert t["mail_params"].get("RET") == "HDRS" and t["mail_params"].get("ENVID") == "env-1", t
    assert t["rcpt_params"][0].get("NOTIFY") == "SUCCESS,FAILURE", t
    assert (t["rcpt_params"][0].get("ORCPT") or "").lower() == "rfc822;orig@remote.test", t
    # 2. It does not: no DSN parameters on the wire, a "relayed" notice.
    outbound.send(["v@nodsn.test"], mail_options=["RET=FULL", "ENVID=env-2"],
                  rcpt_options=["NOTIFY=SUCCESS"])
    outbound.wait_status("v@nodsn.test", delivery_re(
        "v@nodsn.test", hostport(MX2, MX2, outbound.port), r"2\.0\.0", "sent", r"250 .*",
        service="smtp"))
    [t] = nodsn.messages
    assert not {"RET", "ENVID"} & set(t["mail_params"]), t["mail_params"]
    assert not {"NOTIFY", "ORCPT"} & set(t["rcpt_params"][0]), t["rcpt_params"]
    [(msg, per_msg, rcpts)] = outbound.notices(1)
    assert [rfc822(r["Final-Recipient"]) for r in rcpts] == ["v@nodsn.test"], msg.as_string()
    assert rcpts[0]["Action"] == "relayed" and rcpts[0]["Status"].startswith("2."), msg.as_string()
    assert per_msg.get("Original-Envelope-Id") == "env-2", msg.as_string()
    time.sleep(1.0)
    assert outbound.notice_count() == 1, "no notice for the DSN-capable next hop"


# --- admin: pause/resume, flush --------------------------------------------------

def test_delivery_pause_and_resume(outbound):
    mx1 = outbound.fake(MX1)
    outbound.start()
    outbound.tern("delivery", "pause")
    outbound.send(["u@remote.test"])
    time.sleep(2.0)
    assert mx1.connections == [], "paused, yet delivered:\n" + mx1.describe()
    assert "u@remote.test" in outbound.queue_list()
    outbound.tern("delivery", "resume")
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent",
        r"250 .*", service="smtp"))
    assert mx1.delivered() == ["u@remote.test"]


def test_flush_retries_deferred_mail_now(outbound):
    answers = iter(["451 4.3.0 try again later"])
    mx1 = outbound.fake(MX1, data_reply=lambda txn: next(answers, "250 2.0.0 Ok: flushed"))
    outbound.start(minimal_backoff_time="1h", maximal_backoff_time="2h", queue_run_delay="1h")
    outbound.send(["u@remote.test"])
    relay = hostport("mx1.remote.test", MX1, outbound.port)
    m = outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", relay, r"4\.3\.0", "deferred",
        said("mx1.remote.test", MX1, "451 4.3.0 try again later", "end of DATA"),
        service="smtp"), transient=True)
    time.sleep(1.5)
    assert len(mx1.transactions) == 1, "no retry before the backoff:\n" + mx1.describe()
    outbound.tern("flush")
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", relay, r"2\.0\.0", "sent", re.escape("250 2.0.0 Ok: flushed"),
        service="smtp", qid=m.group(1)), transient=True, timeout=5)
    assert mx1.delivered() == ["u@remote.test"]
