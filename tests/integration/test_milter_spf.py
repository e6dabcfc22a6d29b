"""test_milter_spf.py - tern-spf-milter under a real Postfix 3.7.

SPF records for every result are served by a dnsmasq on loopback; the
client address comes from XCLIENT (libspf2 passes 127/8 unconditionally,
and the milter skips loopback clients anyway). Checked: the SMTP answer to
MAIL FROM (550 5.7.23 for fail, 451 4.7.24 for a DNS error), the
Received-SPF and Authentication-Results fields of delivered mail, the HELO
identity, and that trusted clients are not checked.
"""

import re

import pytest

import harness
from milterworld import milter_world  # noqa: F401  (fixture)

MAILBOXES = {"user@example.com": "example.com/user/"}
CLIENT = "192.0.2.10"
XCLIENT = "ADDR=%s NAME=mail.client.test" % CLIENT
RECEIVER = "mx.pf.test"


# The SPF records both MTAs' tests publish (test_milters_ternd.py too);
# temp.test is forwarded to a port nobody answers on.
SPF_TXT = {
    "pass.test": ["v=spf1 ip4:192.0.2.0/24 -all"],
    "fail.test": ["v=spf1 -all"],
    "soft.test": ["v=spf1 ~all"],
    "neutral.test": ["v=spf1 ?all"],
    "perm.test": ["v=spf1 ip4:300.1.1.1 -all"],
    "badhelo.test": ["v=spf1 -all"],
    "goodhelo.test": ["v=spf1 ip4:192.0.2.10 -all"],
}


@pytest.fixture
def world(milter_world, start_program):
    dead = harness.free_port()     # nobody answers there: DNS errors for temp.test
    dns = harness.start_dns(start_program, txt=SPF_TXT, extra=["--server=/temp.test/127.0.0.1#%d" % dead])
    conf = ("user = tern\ndns_servers = %s\ndns_timeout = 2s\nreceiver = %s\n"
            "spf_header = received-spf, authentication-results\n" % (dns.server, RECEIVER))
    return milter_world("spf", conf, MAILBOXES)


def fields(raw, name):
    """The unfolded values of every `name` field in a raw message."""
    text = raw.replace(b"\r\n", b"\n")
    rx = re.compile(rb"(?mi)^%s:([^\n]*(?:\n[ \t][^\n]*)*)" % name.encode())
    return [re.sub(r"\s+", " ", m.group(1).decode()).strip() for m in rx.finditer(text)]


def message(subject):
    return ("From: someone@pass.test\r\nTo: user@example.com\r\nSubject: %s\r\n"
            "Date: Sat, 21 Nov 2026 09:00:00 +0000\r\nMessage-ID: <%s@c.test>\r\n\r\nbody\r\n"
            % (subject, subject)).encode()


def test_every_result(world):
    w = world
    n = 0
    for sender, want in [("user@pass.test", "pass"), ("user@soft.test", "softfail"),
                         ("user@neutral.test", "neutral"), ("user@none.test", "none"),
                         ("user@perm.test", "permerror")]:
        code, text = w.send(sender, ["user@example.com"], message(want), helo="goodhelo.test",
                            xclient=XCLIENT)
        assert code == 250, (sender, code, text, w.log())
        n += 1
        raw = w.wait_mail("user@example.com", n, raw=True)[n - 1]
        rs = fields(raw, "Received-SPF")
        assert len(rs) == 1, (sender, raw[:800])
        assert re.fullmatch(r"%s \(.*\) client-ip=192\.0\.2\.10; envelope-from=%s; "
                            r"helo=goodhelo\.test; receiver=mx\.pf\.test; identity=mailfrom;?"
                            % (want, re.escape(sender)), rs[0]), rs[0]
        ar = fields(raw, "Authentication-Results")
        assert len(ar) == 1 and re.fullmatch(
            r"mx\.pf\.test; spf=%s \(.*\) smtp\.mailfrom=%s" % (want, re.escape(sender)),
            ar[0]), ar
        # Received-SPF on top, above Postfix's Received:
        first = [ln for ln in raw.split(b"\n") if not re.match(
            rb"(?i)(Return-Path|X-Original-To|Delivered-To):", ln)][0]
        assert first.startswith(b"Received-SPF:"), raw[:400]
    assert "libspf2" not in w.log()


def test_fail_rejects_and_temperror_defers(world):
    w = world
    code, text = w.send("user@fail.test", ["user@example.com"], message("fail"),
                        helo="goodhelo.test", xclient=XCLIENT)
    assert code == 550 and text.startswith("5.7.23 Message rejected due to: SPF fail"), (code, text)
    code, text = w.send("user@temp.test", ["user@example.com"], message("temp"),
                        helo="goodhelo.test", xclient=XCLIENT)
    assert code == 451 and text.startswith("4.7.24 "), (code, text, w.log())
    # HELO identity fails: refused even though MAIL FROM would pass
    code, text = w.send("user@pass.test", ["user@example.com"], message("helo"),
                        helo="badhelo.test", xclient=XCLIENT)
    assert code == 550 and "5.7.23" in text and "s=helo" in text, (code, text)
    assert re.search(r"NOQUEUE: reject: MAIL from mail\.client\.test\[192\.0\.2\.10\]: SPF fail "
                     r"\(mailfrom identity fail\.test\)", w.log()), w.log()


def test_trusted_client_not_checked_and_forged_ar_removed(world):
    w = world
    raw = (b"Authentication-Results: mx.pf.test; spf=pass smtp.mailfrom=evil.test\r\n"
           + message("trusted"))
    # From loopback (skip_addresses): a fail domain is not refused, no header.
    code, text = w.send("user@fail.test", ["user@example.com"], raw, helo="goodhelo.test")
    assert code == 250, (code, text)
    got = w.wait_mail("user@example.com", 1, raw=True)[0]
    assert not fields(got, "Received-SPF")
    assert b"evil.test" not in got
