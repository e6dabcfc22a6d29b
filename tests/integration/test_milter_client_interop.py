"""test_milter_client_interop.py - ternd hosting real milters, compared
with Postfix 3.7 hosting the same ones:

- differential: the all-edits pymilter milter and the per-recipient
  refusals, attached to a private Postfix and to ternd; the same message
  to both; the delivered header (order and values, trace fields aside),
  body, recipients and SMTP replies must be the same;
- opendkim (no DNS: TestPublicKeys) signs mail ternd relays, verified by
  dkimpy; and verifies signed inbound mail (Authentication-Results);
- Tern's own tern-dkim-milter signing under ternd, verified by dkimpy.
"""

import re
import smtplib
import subprocess
import time

import dkim
import pytest

import harness
from pfinstance import PostfixInstance
from test_milter_client import (MESSAGE, headers_of, maildir, pymilter,  # noqa: F401
                                start_ternd, wait_mail)

BOXES = ["joe", "alice", "archive", "added", "bad", "temp", "drop"]


def smtp_send(port, sender, rcpts, msg, xclient=None):
    """(rcpt replies, DATA reply) as (code, text) pairs."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.net", timeout=30) as s:
        s.ehlo("client.example.net")
        if xclient:
            assert s.docmd("XCLIENT", xclient)[0] == 220
            s.ehlo("client.example.net")
        assert s.mail(sender)[0] == 250
        replies = [s.rcpt(r) for r in rcpts]
        replies = [(c, t.decode()) for c, t in replies]
        if not any(c == 250 for c, _ in replies):
            return replies, None
        try:
            code, text = s.data(msg.encode() if isinstance(msg, str) else msg)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        return replies, (code, text.decode() if isinstance(text, bytes) else text)


def view(raw):
    """Headers from the first milter-inserted one on (the delivery and
    trace fields differ by MTA), Received: values blanked, and the body."""
    text = raw.decode().replace("\r\n", "\n")
    hdrs = headers_of(text)
    start = next(i for i, h in enumerate(hdrs) if h.startswith("X-Inserted-0:"))
    hdrs = [("Received: ..." if h.startswith("Received:") else h) for h in hdrs[start:]]
    return hdrs, text.split("\n\n", 1)[1]


@pytest.fixture
def postfix(tmp_path):
    instances = []

    def make(**main):
        pf = PostfixInstance(tmp_path / ("pf%d" % len(instances)), harness.free_port(),
                             mailboxes={"%s@example.test" % b: "example.test/%s/" % b
                                        for b in BOXES},
                             main=dict(main))
        pf.start()
        instances.append(pf)
        return pf
    yield make
    for pf in instances:
        pf.stop()


def pf_mail(pf, user, n=1, timeout=15):
    d = pf.maildir("%s@example.test" % user) / "new"
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = sorted(d.glob("*")) if d.exists() else []
        if len(files) >= n:
            return [f.read_bytes() for f in files]
        time.sleep(0.05)
    raise AssertionError("no mail for %s at Postfix:\n%s" % (user, pf.maillog_summary()))


# Postfix's cleanup adds a missing Date: (Tern does not): give one.
DATED = MESSAGE.replace("Message-ID:", "Date: Sat, 21 Nov 2026 09:00:00 +0000\r\nMessage-ID:")


def test_differential_all_edits(config_dir, start_program, pymilter, postfix):
    ep, _ = pymilter("edits")
    pf = postfix(smtpd_milters=ep, milter_default_action="tempfail")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    rcpts = ["joe@example.test", "archive@example.test"]
    pf_r = smtp_send(pf.port, "a@example.org", rcpts, DATED)
    tern_r = smtp_send(port, "a@example.org", rcpts, DATED)
    assert [c for c, _ in pf_r[0]] == [c for c, _ in tern_r[0]] == [250, 250]
    assert pf_r[1][0] == tern_r[1][0] == 250
    for user in ("joe", "added", "alice"):
        want = view(pf_mail(pf, user)[0])
        got = view(wait_mail(config_dir, user)[0])
        assert got == want, "\n".join(["postfix:"] + want[0] + ["tern:"] + got[0])
    time.sleep(0.5)
    assert not (pf.maildir("archive@example.test") / "new").exists() or \
        not list((pf.maildir("archive@example.test") / "new").iterdir())
    assert maildir(config_dir, "archive") == []


def test_differential_rcpt_replies(config_dir, start_program, pymilter, postfix):
    ep, _ = pymilter("rcpt")
    pf = postfix(smtpd_milters=ep, milter_default_action="tempfail")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    rcpts = ["bad@example.test", "temp@example.test", "drop@example.test", "joe@example.test"]
    pf_r = smtp_send(pf.port, "a@example.org", rcpts, MESSAGE)
    tern_r = smtp_send(port, "a@example.org", rcpts, MESSAGE)
    assert pf_r[0] == tern_r[0]
    assert pf_r[1][0] == tern_r[1][0] == 250


@pytest.mark.parametrize("mode", ["reject-eom", "tempfail-eom", "discard"])
def test_differential_eom_decisions(config_dir, start_program, pymilter, postfix, mode):
    ep, _ = pymilter(mode)
    pf = postfix(smtpd_milters=ep, milter_default_action="tempfail")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    pf_r = smtp_send(pf.port, "a@example.org", ["joe@example.test"], MESSAGE)
    tern_r = smtp_send(port, "a@example.org", ["joe@example.test"], MESSAGE)
    code = lambda r: r[1][0]  # noqa: E731
    text = lambda r: re.sub(r"queued as \w+", "queued as ID", r[1][1])  # noqa: E731
    assert (code(tern_r), text(tern_r)) == (code(pf_r), text(pf_r))


# ---- opendkim ---------------------------------------------------------------


@pytest.fixture
def opendkim(tmp_path, start_program):
    d = tmp_path / "dkim"
    d.mkdir()
    harness.traversable(d)
    subprocess.run(["opendkim-genkey", "-b", "2048", "-d", "example.com", "-s", "sel1",
                    "-D", str(d)], check=True)
    txt = (d / "sel1.txt").read_text()
    record = "".join(re.findall(r'"([^"]*)"', txt))
    (d / "testkeys.txt").write_text("sel1._domainkey.example.com %s\n" % record)
    port = harness.free_port()
    conf = d / "opendkim.conf"
    conf.write_text("Syslog no\nMode sv\nSocket inet:%d@127.0.0.1\nDomain example.com\n"
                    "Selector sel1\nKeyFile %s\nInternalHosts 127.0.0.1\n"
                    "Canonicalization simple/simple\nTestPublicKeys %s\n"
                    "AuthservID mx.test.example\nRequireSafeKeys false\nBackground false\n"
                    % (port, d / "sel1.private", d / "testkeys.txt"))
    start_program(["/usr/sbin/opendkim", "-f", "-x", str(conf)], ready=port, name="opendkim")
    return "inet:127.0.0.1:%d" % port, record.encode(), (d / "sel1.private").read_bytes()


SIGNME = ("From: Alice <alice@example.com>\r\nTo: joe@example.test\r\n"
          "Subject: sign me\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000\r\n"
          "Message-ID: <dkim1@example.com>\r\n\r\nHello, signed world.\r\n"
          "A second line.\r\n")


def crlf(raw):
    return re.sub(rb"(?<!\r)\n", b"\r\n", raw)


def test_opendkim_signs_relayed_mail(config_dir, start_program, opendkim):
    ep, record, _ = opendkim
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    _, final = smtp_send(port, "alice@example.com", ["joe@example.test"], SIGNME)
    assert final[0] == 250, final
    raw = crlf(wait_mail(config_dir, "joe")[0])
    assert b"DKIM-Signature:" in raw
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record), raw.decode()
    # tampering is noticed: the verifier really checks
    assert not dkim.verify(raw.replace(b"Hello, signed", b"Hello, forged"),
                           dnsfunc=lambda name, timeout=5: record)


def test_opendkim_verifies_inbound_mail(config_dir, start_program, opendkim):
    ep, record, key = opendkim
    port = start_ternd(config_dir, start_program, smtpd_milters=ep,
                       smtpd_authorized_xclient_hosts="127.0.0.0/8")
    signed = dkim.sign(SIGNME.encode(), b"sel1", b"example.com", key,
                       canonicalize=(b"relaxed", b"simple"),
                       include_headers=[b"from", b"to", b"subject", b"date"])
    msg = signed + SIGNME.encode()
    _, final = smtp_send(port, "alice@example.com", ["joe@example.test"], msg,
                         xclient="ADDR=192.0.2.10 NAME=mail.example.net")
    assert final[0] == 250, final
    raw = wait_mail(config_dir, "joe")[0].decode()
    ar = re.search(r"^Authentication-Results: (.*(?:\n[ \t].*)*)", raw, re.M)
    assert ar, raw
    assert re.search(r"mx\.test\.example;\s+dkim=pass .*header\.d=example\.com", ar.group(1)), ar
    # A-R above our Received: (opendkim inserts at index 0, Debian's patch)
    assert raw.index("Authentication-Results:") < raw.index("Received: from")


def test_tern_dkim_milter_under_ternd(config_dir, start_program, tmp_path):
    """Tern's own signer (tern-dkim-milter) hosted by ternd."""
    d = tmp_path / "tdkim"
    d.mkdir()
    harness.traversable(d)
    subprocess.run(["opendkim-genkey", "-b", "2048", "-d", "example.com", "-s", "sel1",
                    "-D", str(d)], check=True)
    record = "".join(re.findall(r'"([^"]*)"', (d / "sel1.txt").read_text())).encode()
    mport = harness.free_port()
    conf = d / "dkim-milter.conf"
    conf.write_text(dkim_milter_conf(mport, d))
    start_program([harness.tern_bin("tern-dkim-milter"), "-f", "-c", str(conf)], ready=mport,
                  name="tern-dkim-milter")
    port = start_ternd(config_dir, start_program, smtpd_milters="inet:127.0.0.1:%d" % mport)
    _, final = smtp_send(port, "alice@example.com", ["joe@example.test"], SIGNME)
    assert final[0] == 250, final
    raw = crlf(wait_mail(config_dir, "joe")[0])
    assert b"DKIM-Signature:" in raw, raw
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record), raw.decode()


def dkim_milter_conf(port, d):
    """The parameter names of conf/dkim-milter.conf."""
    return ("user = tern\nsocket = inet:%d@127.0.0.1\n"
            "domain = example.com\nselector = sel1\nkey_file = %s\n"
            "internal_hosts = 127.0.0.0/8\n" % (port, d / "sel1.private"))


def test_differential_quarantine(config_dir, start_program, pymilter, postfix):
    """QUARANTINE: both accept the message and put it on hold."""
    ep, _ = pymilter("quarantine")
    pf = postfix(smtpd_milters=ep, milter_default_action="tempfail")
    port = start_ternd(config_dir, start_program, smtpd_milters=ep)
    pf_r = smtp_send(pf.port, "a@example.org", ["joe@example.test"], MESSAGE)
    tern_r = smtp_send(port, "a@example.org", ["joe@example.test"], MESSAGE)
    assert pf_r[1][0] == tern_r[1][0] == 250
    # Postfix 3.7 logs "milter triggers HOLD action"; 3.10+ (and Tern) the reason
    pf.wait_log(r"milter-hold: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: milter "
                r"triggers HOLD action; from=<a@example\.org> to=<joe@example\.test> "
                r"proto=ESMTP helo=<client\.example\.net>")
    deadline = time.time() + 10
    while not list((pf.queue_dir / "hold").rglob("*[A-F0-9]")) and time.time() < deadline:
        time.sleep(0.1)
    assert list((pf.queue_dir / "hold").rglob("*[A-F0-9]")), pf.maillog_summary()
    tern_qid = tern_r[1][1].split()[-1]
    out = harness.run_tern("queue", "list", config_dir=config_dir, check=True)[1]
    assert re.search(r"%s\s*!" % tern_qid, out), out
