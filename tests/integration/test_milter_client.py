"""test_milter_client.py - ternd as a milter client (smtpd_milters): a
pymilter milter (libmilter underneath) sees the events and macros Postfix
sends and its edits, replies and failures come out as Postfix's would:
the delivered message and envelope, the SMTP replies, the hold queue and
the log lines."""

import json
import re
import socket
import threading
import time

import pytest

import harness
from restr_util import Smtp, log_text, wait_log

BOXES = ["joe", "alice", "archive", "added", "bad", "temp", "drop"]


def _script():
    import pathlib
    return str(pathlib.Path(__file__).parent / "milter_client_pymilter.py")


@pytest.fixture
def pymilter(start_program, tmp_path):
    """Start a pymilter test milter: pymilter(mode) -> (endpoint, log path)."""
    def start(mode):
        port = harness.free_port()
        log = tmp_path / ("milter-%d.jsonl" % port)
        log.write_text("")
        # check_exit=False: libmilter's stop sometimes waits on an idle
        # worker thread and needs SIGKILL; that is not what is tested here
        start_program(["/usr/bin/python3", _script(), str(port), mode, str(log)],
                      ready=port, name="pymilter-%s-%d" % (mode.replace(":", "-"), port),
                      check_exit=False)
        return "inet:127.0.0.1:%d" % port, log
    return start


def events(log, kind=None):
    out = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    # the readiness probe of start_program connects and leaves at once
    while len(out) > 1 and out[0]["kind"] == "connect" and out[1]["kind"] == "connect":
        out.pop(0)
    return [e for e in out if kind is None or e["kind"] == kind]


def start_ternd(cfg, start_program, **settings):
    vbase = cfg.path / "vmail"
    vbase.mkdir(exist_ok=True)
    harness.give_to_mail_owner(vbase)
    cfg.set(smtpd_peername_lookup="no", mydestination="", local_recipient_maps="",
            alias_maps="", virtual_mailbox_domains="example.test",
            virtual_mailbox_maps="inline:{ %s }" % ", ".join(
                "%s@example.test=example.test/%s/" % (b, b) for b in BOXES),
            virtual_mailbox_base=str(vbase), smtpd_client_connection_count_limit="0",
            milter_default_action="tempfail")
    for k, v in settings.items():
        cfg.set(k.replace("__", "."), v)
    cfg.program = start_program([harness.tern_bin("ternd"), "-f", "-c", str(cfg.path)],
                                ready=cfg.smtp_port)
    return cfg.smtp_port


def maildir(cfg, user):
    d = cfg.path / "vmail" / "example.test" / user / "new"
    return sorted(d.glob("*")) if d.exists() else []


def wait_mail(cfg, user, n=1, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = maildir(cfg, user)
        if len(files) >= n:
            return [f.read_bytes() for f in files]
        time.sleep(0.05)
    raise AssertionError("no mail for %s:\n%s" % (user, log_text(cfg)))


MESSAGE = ("From: a@example.org\r\nTo: joe@example.test\r\nSubject: original\r\n"
           "X-Delete-Me: yes\r\nX-Twice: first\r\nX-Twice: second\r\n"
           "Message-ID: <m1@example.org>\r\n\r\nthe body\r\n")


def send(port, sender, rcpts, msg=MESSAGE, helo="client.example.net"):
    s = Smtp(port)
    assert s.cmd("EHLO %s" % helo).startswith("250")
    assert s.cmd("MAIL FROM:<%s> SIZE=%d" % (sender, len(msg))).startswith("250")
    replies = [s.cmd("RCPT TO:<%s>" % r) for r in rcpts]
    if not any(r.startswith("250") for r in replies):
        s.close()
        return replies, None
    final = s.message(msg)
    s.close()
    return replies, final


def headers_of(text):
    head = text.split("\n\n", 1)[0]
    out = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


# ---------------------------------------------------------------------------


def test_events_and_macros(config_dir, start_program, pymilter):
    """CONNECT, HELO, MAIL (with ESMTP args), RCPT, DATA, the headers
    without our Received:, EOH, body and EOM, with Postfix's macros."""
    ep, log = pymilter("record")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep,
                       milter_connect_macros="j {daemon_name} {daemon_addr} v _ {client_addr}",
                       myhostname="mx.example.test")
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250 2.0.0 Ok: queued as ")
    qid = final.split()[-1]
    wait_mail(config_dir, "joe")
    wait_log(config_dir, "%s: removed" % qid)
    ev = events(log)
    kinds = [e["kind"] for e in ev]
    assert kinds[:6] == ["connect", "helo", "mail", "rcpt", "data", "eoh"], kinds
    assert kinds[-1] == "eom"
    c = ev[0]
    assert c["host"] == "[127.0.0.1]"  # no verified name: "[addr]" as Postfix
    assert c["macros"]["j"] == "mx.example.test"
    assert c["macros"]["{daemon_name}"] == "mx.example.test"
    assert c["macros"]["{daemon_addr}"] == "127.0.0.1"
    assert c["macros"]["{client_addr}"] == "127.0.0.1"
    assert c["macros"]["v"].startswith("Tern ")
    assert c["macros"]["_"] == "unknown [127.0.0.1]"
    m = ev[2]
    assert m["sender"] == "<a@example.org>"
    assert m["args"] == ["SIZE=%d" % len(MESSAGE)]
    assert m["macros"]["{mail_addr}"] == "a@example.org"
    assert "i" not in m["macros"]  # no queue ID before the first RCPT (Postfix)
    assert ev[3]["rcpt"] == "<joe@example.test>"
    assert ev[3]["macros"]["{rcpt_addr}"] == "joe@example.test"
    assert ev[3]["macros"]["{rcpt_mailer}"] == "virtual"  # as delivery resolves it
    assert ev[3]["macros"]["{rcpt_host}"] == "example.test"
    hdrs = ev[5]["headers"]
    assert [h[0] for h in hdrs] == ["From", "To", "Subject", "X-Delete-Me", "X-Twice",
                                    "X-Twice", "Message-ID"]
    assert hdrs[2][1] == "original"  # one leading space eaten (no HDR_LEADSPC)
    assert ev[-1]["macros"]["i"] == qid


def test_unknown_command_and_big_body(config_dir, start_program, pymilter):
    """An unknown command goes to the milter (and still gets our 500);
    a 151 500-byte body arrives in chunks of at most 65535 bytes; RSET
    after MAIL aborts the milter's message."""
    ep, log = pymilter("record")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    s = Smtp(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("XYZZY plugh").startswith("500 5.5.2")
    assert s.cmd("MAIL FROM:<first@example.org>").startswith("250")
    assert s.cmd("RSET").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    body = "".join("%05d %s\r\n" % (i, "y" * 93) for i in range(1500))
    assert s.message("Subject: big\r\n\r\n" + body).startswith("250")
    s.close()
    raw = wait_mail(config_dir, "joe")[0].decode().replace("\r\n", "\n")
    assert raw.split("\n\n", 1)[1] == body.replace("\r\n", "\n")
    assert events(log, "unknown")[0]["cmd"] == "XYZZY"  # Postfix: the command word only
    assert [e["size"] for e in events(log, "body")] == [65535, 65535, len(body) - 2 * 65535]
    assert len(events(log, "abort")) == 1  # the RSET
    assert [e["sender"] for e in events(log, "mail")] == ["<first@example.org>", "<a@example.org>"]


def test_bdat_message(config_dir, start_program, pymilter):
    """BDAT: the milter gets one DATA event, just before the headers."""
    ep, log = pymilter("tag:bdat")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    s = Smtp(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    chunk = "Subject: bdat\r\n\r\nchunked\r\n"
    s.sock.sendall(("BDAT %d LAST\r\n" % len(chunk) + chunk).encode())
    assert s.reply().startswith("250 2.0.0 Ok: %d bytes queued as" % len(chunk))
    s.close()
    text = wait_mail(config_dir, "joe")[0].decode().replace("\r\n", "\n")
    assert headers_of(text)[-1] == "X-Tag: bdat"
    kinds = [e["kind"] for e in events(log)]
    assert kinds[kinds.index("rcpt"):] == ["rcpt", "data", "eoh", "body", "eom"], kinds


def test_all_edits(config_dir, start_program, pymilter):
    """Every edit at once; the delivered message and envelope are exactly
    what Postfix's index rules give."""
    ep, log = pymilter("edits")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    _, final = send(port, "a@example.org", ["joe@example.test", "archive@example.test"])
    assert final.startswith("250 2.0.0 Ok: queued as "), final
    for user in ("joe", "added", "alice"):
        raw = wait_mail(config_dir, user)[0].decode()
        text = raw.replace("\r\n", "\n")
        hdrs = headers_of(text)
        # delivery headers (Return-Path, Delivered-To) come first
        assert "Return-Path: <bounce@example.org>" in hdrs
        start = hdrs.index("X-Inserted-0: at index 0")
        names = [h.split(":", 1)[0] for h in hdrs[start:]]
        assert names == ["X-Inserted-0", "Received", "X-Inserted-2", "From", "To", "Subject",
                         "X-Twice", "Message-ID", "X-Added", "X-Multi", "X-Missing"], hdrs
        assert "Subject: changed subject" in hdrs
        assert "X-Twice: second, changed" in hdrs
        assert "X-Multi: line1\n\tline2" in hdrs
        assert "X-Missing: added by change" in hdrs
        body = text.split("\n\n", 1)[1]
        want = "".join("line %05d %s\n" % (i, "x" * 60) for i in range(1200))
        assert len(want) > 65536
        assert body == want
    time.sleep(0.5)
    assert maildir(config_dir, "archive") == []
    assert maildir(config_dir, "joe") and len(maildir(config_dir, "joe")) == 1


def test_rcpt_replies(config_dir, start_program, pymilter):
    """Per-recipient refusals with custom and multi-line codes; "%%" -> "%"."""
    ep, log = pymilter("rcpt")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    replies, final = send(port, "a@example.org",
                          ["bad@example.test", "temp@example.test", "drop@example.test",
                           "joe@example.test"])
    assert replies[0] == "550-5.7.1 no such user % here\n550 5.7.1 second line"
    assert replies[1] == "451 4.7.1 come back later"
    assert replies[2] == "550 5.7.1 Command rejected"
    assert replies[3].startswith("250")
    assert final.startswith("250 2.0.0 Ok")
    wait_mail(config_dir, "joe")
    wait_log(config_dir, r"NOQUEUE: milter-reject: RCPT from unknown\[127\.0\.0\.1\]: "
             r"451 4\.7\.1 come back later; from=<a@example\.org> "
             r"to=<temp@example\.test> proto=ESMTP helo=<client\.example\.net>")


@pytest.mark.parametrize("mode,code,logtext", [
    ("reject-eom", "550 5.7.1 rejected 100% by test",
     r"milter-reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 5\.7\.1 rejected 100% "
     r"by test; from=<a@example\.org> to=<joe@example\.test> proto=ESMTP "
     r"helo=<client\.example\.net>"),
    ("tempfail-eom", "451 4.7.1 Service unavailable - try again later",
     r"milter-reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 4\.7\.1 Service"),
    ("discard", "250 2.0.0 Ok: queued as",
     r"milter-discard: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: milter triggers "
     r"DISCARD action; from=<a@example\.org>"),
])
def test_eom_decisions(config_dir, start_program, pymilter, mode, code, logtext):
    ep, log = pymilter(mode)
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith(code), final
    wait_log(config_dir, logtext)
    time.sleep(0.3)
    assert maildir(config_dir, "joe") == []


def test_quarantine_goes_to_hold(config_dir, start_program, pymilter):
    ep, log = pymilter("quarantine")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250 2.0.0 Ok: queued as ")
    qid = final.split()[-1]
    wait_log(config_dir, r"%s: milter-hold: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: "
             r"test quarantine; from=<a@example\.org> to=<joe@example\.test>" % qid)
    time.sleep(0.5)
    assert maildir(config_dir, "joe") == []
    out = harness.run_tern("queue", "list", config_dir=config_dir, check=True)[1]
    assert re.search(r"%s\s*!" % qid, out), out  # "!": on hold, as mailq


def test_unix_socket_milter(config_dir, start_program, tmp_path):
    path = tmp_path / "m.sock"
    log = tmp_path / "unix.jsonl"
    log.write_text("")
    start_program(["/usr/bin/python3", _script(), str(path), "tag:unix", str(log)],
                  ready=lambda: path.exists(), name="pymilter-unix")
    harness.traversable(tmp_path)
    path.chmod(0o666)  # ternd runs as mail_owner
    port = start_ternd(config_dir, start_program, smtpd_milters="unix:%s" % path)
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250")
    text = wait_mail(config_dir, "joe")[0].decode().replace("\r\n", "\n")
    assert headers_of(text)[-1] == "X-Tag: unix"


def test_rcpt_rej_milter_sees_refused_recipients(config_dir, start_program, pymilter):
    """SMFIP_RCPT_REJ: a recipient we refused still goes to the milter,
    with {rcpt_mailer}=error, {rcpt_host}=DSN code, {rcpt_addr}=text."""
    ep, log = pymilter("rcptrej")
    ep2, log2 = pymilter("record")
    port = start_ternd(config_dir, start_program, smtpd_milters="%s %s" % (ep, ep2))
    replies, final = send(port, "a@example.org", ["nobody@example.test", "joe@example.test"])
    assert replies[0].startswith("550 5.1.1 <nobody@example.test>: Recipient address rejected")
    assert final.startswith("250")
    r = events(log, "rcpt")
    assert r[0]["rcpt"] == "<nobody@example.test>"
    assert r[0]["macros"]["{rcpt_mailer}"] == "error"
    assert r[0]["macros"]["{rcpt_host}"] == "5.1.1"
    assert r[0]["macros"]["{rcpt_addr}"].startswith("<nobody@example.test>: Recipient address")
    assert r[1]["rcpt"] == "<joe@example.test>" and r[1]["macros"]["{rcpt_mailer}"] == "virtual"
    # the other milter did not ask: it sees only the accepted one
    assert [e["rcpt"] for e in events(log2, "rcpt")] == ["<joe@example.test>"]


def test_milters_in_order_see_earlier_edits(config_dir, start_program, pymilter):
    ep1, log1 = pymilter("tag:one")
    ep2, log2 = pymilter("tag:two")
    port = start_ternd(config_dir, start_program, smtpd_milters="%s, %s" % (ep1, ep2))
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250")
    text = wait_mail(config_dir, "joe")[0].decode().replace("\r\n", "\n")
    hdrs = headers_of(text)
    assert hdrs[-2:] == ["X-Tag: one", "X-Tag: two"]
    seen2 = events(log2, "eoh")[0]["headers"]
    assert ["X-Tag", "one"] in seen2
    assert all(h[0] != "X-Tag" for h in events(log1, "eoh")[0]["headers"])


# ---- failures --------------------------------------------------------------


@pytest.mark.parametrize("action,greeting,mail_reply", [
    ("accept", "220", "250"),
    ("tempfail", "220", "451 4.7.1 Service unavailable - try again later"),
    ("reject", "554 tern.test ESMTP not accepting connections", "503 5.7.0"),
    ("shutdown", "421 tern.test Service unavailable - try again later", None),
])
def test_milter_not_listening(config_dir, start_program, action, greeting, mail_reply):
    """Each default action, as Postfix's smtpd applies it at CONNECT."""
    dead = harness.free_port()
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="{ inet:127.0.0.1:%d, default_action=%s }" % (dead, action))
    s = Smtp(port)
    assert s.greeting.startswith(greeting), s.greeting
    if mail_reply is None:
        with pytest.raises(ConnectionError):
            s.reply()
    else:
        s.cmd("EHLO client.example.net")  # refused too after a 554 greeting
        r = s.cmd("MAIL FROM:<a@example.org>")
        assert r.startswith(mail_reply), r
        s.close()
    wait_log(config_dir, r"warning: milter inet:127\.0\.0\.1:%d: connect to "
             r"inet:127\.0\.0\.1:%d: Connection refused" % (dead, dead))


def test_quarantine_default_action(config_dir, start_program, pymilter):
    ep, log = pymilter("close-eom")
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="{ %s, default_action=quarantine }" % ep)
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250 2.0.0 Ok: queued as ")
    wait_log(config_dir, r"milter-hold: END-OF-MESSAGE from .*: default_action;")
    wait_log(config_dir, r"warning: milter %s: lost connection" % re.escape(ep))


def test_hanging_milter_times_out_and_others_proceed(config_dir, start_program, pymilter):
    """A milter that never answers EOM: the content timeout applies the
    default action; meanwhile other sessions are served at full speed."""
    ep, log = pymilter("hang-eom")
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="{ %s, content_timeout=3s }" % ep,
                       listen_fast="127.0.0.1:%d" % harness.free_port(),
                       fast__smtpd_milters="")
    fast = int(config_dir.get("listen_fast").rsplit(":", 1)[1])
    harness.wait_for(lambda: harness.port_accepts(fast), what="fast listener")
    result = {}

    def slow():
        t = time.time()
        result["reply"] = send(port, "a@example.org", ["joe@example.test"])[1]
        result["took"] = time.time() - t

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.5)
    t = time.time()
    _, final = send(fast, "a@example.org", ["alice@example.test"])
    assert final.startswith("250") and time.time() - t < 2.0
    # the slow one's milter connection: a second session on the milter port too
    th.join(15)
    assert result["reply"].startswith("451 4.7.1 Service unavailable"), result
    assert 2.5 < result["took"] < 10
    wait_log(config_dir, r"warning: milter %s: timeout while waiting for the reply to "
             r"END-OF-MESSAGE" % re.escape(ep))


def test_progress_keeps_the_timer_alive(config_dir, start_program, pymilter):
    """4 s at end of message with content_timeout=2s: PROGRESS every 0.8 s
    restarts the timer, so the message is accepted."""
    ep, log = pymilter("slow-progress")
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="{ %s, content_timeout=2s }" % ep)
    t = time.time()
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250 2.0.0 Ok: queued as "), final
    assert time.time() - t > 3.5
    wait_mail(config_dir, "joe")


class RawMilter:
    """A misbehaving milter: answers OPTNEG as told, then per script."""

    def __init__(self, optneg=None, after=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.optneg = optneg
        self.after = after
        self.sessions = []  # per milter connection: [(cmd, data)]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        f = c.makefile("rb")
        seen = []
        self.sessions.append(seen)
        try:
            while True:
                hdr = f.read(4)
                if len(hdr) < 4:
                    return
                n = int.from_bytes(hdr, "big")
                pkt = f.read(n)
                cmd = chr(pkt[0])
                seen.append((cmd, pkt[1:]))
                if cmd == "O":
                    c.sendall(self.optneg)
                elif cmd in "D":
                    continue
                elif self.after:
                    out = self.after(cmd, pkt[1:])
                    if out is None:
                        continue
                    c.sendall(out)
        except OSError:
            return
        finally:
            c.close()


def pkt(cmd, data=b""):
    return (len(data) + 1).to_bytes(4, "big") + cmd.encode() + data


def optneg(version=6, actions=0x1ff, proto=0):
    return pkt("O", version.to_bytes(4, "big") + actions.to_bytes(4, "big") +
               proto.to_bytes(4, "big"))


@pytest.mark.parametrize("answer,logged", [
    (b"\x00\x00\x00\x01Z", "unexpected filter response 'Z' after event CONNECT"),
    (b"\x7f\xff\xff\xffc", "bad packet length 2147483647"),
    (b"\x00\x00\x00\x05y550 ", "malformed REPLYCODE"),
])
def test_garbage_and_oversized_packets(config_dir, start_program, answer, logged):
    """The milter fails with a warning naming it; its default action
    (tempfail) then answers every command of the session."""
    m = RawMilter(optneg(), after=lambda c, d: answer)
    port = start_ternd(config_dir, start_program, smtpd_milters="inet:127.0.0.1:%d" % m.port)
    s = Smtp(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("451 4.7.1")
    s.close()
    wait_log(config_dir, r"warning: milter inet:127\.0\.0\.1:%d: %s" % (m.port, re.escape(logged)))


def test_version2_milter_gets_no_data_or_unknown(config_dir, start_program):
    """A v2 milter: no DATA and no UNKNOWN events (nor their macros)."""
    m = RawMilter(optneg(version=2, actions=0x3f, proto=0),
                  after=lambda c, d: pkt("c") if c in "CHMRTULNBE" else None)
    port = start_ternd(config_dir, start_program, smtpd_milters="inet:127.0.0.1:%d" % m.port)
    s = Smtp(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("FOO bar").startswith("500")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    assert s.message(MESSAGE).startswith("250")
    s.close()
    wait_mail(config_dir, "joe")
    cmds = ["".join(c for c, _ in seen) for seen in m.sessions]
    cmds = [c for c in cmds if "M" in c][0].rstrip("Q")
    # no T, no U (nor their macros); eoh/eod macros before each L and B (Postfix)
    assert cmds == "ODCHDMDRDLDLDLDLDLDLDLDNDBDE", cmds


def test_no_reply_flags_honoured_even_unasked(config_dir, start_program):
    """rspamd-style: every NR_* bit in the reply; ternd must not wait for
    replies to those events (else it would hang until the timeout)."""
    m = RawMilter(optneg(proto=0x000FF080),
                  after=lambda c, d: pkt("a") if c == "E" else None)
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="{ inet:127.0.0.1:%d, command_timeout=5s, "
                                     "content_timeout=5s }" % m.port)
    t = time.time()
    _, final = send(port, "a@example.org", ["joe@example.test"])
    assert final.startswith("250") and time.time() - t < 3, final
    wait_mail(config_dir, "joe")
