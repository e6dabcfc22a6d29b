"""tern-policyd under both MTAs: a private real Postfix 3.7
(pfinstance.py) and ternd use it through check_policy_service (inet and
unix sockets), with XCLIENT giving non-loopback client addresses. The same
script runs against each and must see the same SMTP replies and the same
delivered headers: greylisting (deferred, then accepted after the delay
with X-Greylist and Received-SPF, each once), an SPF fail refused with
pypolicyd-spf's reply, an access-table refusal, and one BCC archive copy.
"""

import signal
import smtplib
import time

import pytest

import harness
from pfinstance import PostfixInstance
from policyd_helpers import PolicyServer

BOXES = {"bob@example.test": "example.test/bob/", "carol@example.test": "example.test/carol/",
         "archive@example.test": "example.test/archive/"}


class Mta:
    """Postfix or ternd on a loopback port, delivering BOXES into maildirs."""

    def __init__(self, kind, start_program, make_config_dir, tmp_path, endpoint):
        self.kind = kind
        restrictions = {
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_recipient_restrictions":
                "reject_unauth_destination, check_policy_service %s" % endpoint,
            "smtpd_data_restrictions": "check_policy_service %s" % endpoint,
            "smtpd_policy_service_default_action": "451 4.3.5 policy down",
        }
        if kind == "postfix":
            self.pf = PostfixInstance(tmp_path / "postfix", harness.free_port(),
                                      myhostname="mx.example.test", mailboxes=BOXES,
                                      main=restrictions)
            self.pf.start()
            self.port = self.pf.port
            self.base = self.pf.mail
        else:
            cfg = make_config_dir("ternd")
            self.base = cfg.path / "mail"
            (self.base / "example.test").mkdir(parents=True)
            harness.give_to_mail_owner(self.base)
            cfg.set(mydestination="", virtual_mailbox_domains="example.test",
                    virtual_mailbox_base=str(self.base),
                    virtual_mailbox_maps="inline:{ %s }" % ", ".join(
                        "%s=%s" % kv for kv in BOXES.items()),
                    alias_maps="", local_recipient_maps="", **restrictions)
            start_program([harness.tern_bin("ternd"), "-f", "-c", cfg], ready=cfg.smtp_port,
                          name="ternd")
            self.port = cfg.smtp_port

    def stop(self):
        if self.kind == "postfix":
            self.pf.stop()

    def send(self, addr, sender, rcpts, helo="mail.example.org"):
        """One transaction from client addr; the RCPT replies as
        (code, text), and DATA is sent when a recipient was accepted."""
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        s.ehlo("localhost")
        code, msg = s.docmd("XCLIENT", "ADDR=%s NAME=%s HELO=%s" % (addr, helo, helo))
        assert code == 220, msg
        s.ehlo(helo)
        code, msg = s.mail(sender)
        assert code == 250, msg
        replies = [s.rcpt(r) for r in rcpts]
        if any(c == 250 for c, _ in replies):
            code, msg = s.data("Subject: test\r\n\r\nhello\r\n")
            assert code == 250, msg
        s.quit()
        return [(c, m.decode()) for c, m in replies]

    def delivered(self, address, n=1, timeout=15):
        box = self.base / BOXES[address] / "new"
        harness.wait_for(lambda: box.is_dir() and len(list(box.iterdir())) >= n, timeout,
                         what="%d message(s) for %s" % (n, address))
        return [p.read_text() for p in sorted(box.iterdir())]


@pytest.fixture
def world(request, start_program, make_config_dir, dns, tmp_path):
    zone = dns(txt={"spf.example": ["v=spf1 ip4:192.0.2.0/24 -all"]})
    srv = PolicyServer(start_program, tmp_path / "policyd",
                       checks="access, spf, greylist, bcc",
                       dns_servers=zone.server, greylist_delay="2s",
                       sender_access="inline:{ {spammer@spf.example = REJECT no thanks} }",
                       bcc_sender_maps="inline:{ {archived@spf.example = archive@example.test} }")
    sock = tmp_path / "policyd" / "policy.sock"
    srv.set(listen="inet:127.0.0.1:%d unix:%s" % (srv.port, sock))
    srv.start()
    mtas = []

    def mta(kind, transport="inet"):
        endpoint = "inet:127.0.0.1:%d" % srv.port if transport == "inet" else "unix:%s" % sock
        m = Mta(kind, start_program, make_config_dir, tmp_path, endpoint)
        mtas.append(m)
        return m

    try:
        yield srv, mta
    finally:
        for m in mtas:
            m.stop()


MTAS = ["postfix", "ternd"]


def headers(msg):
    return msg.split("\n\n", 1)[0]


@pytest.mark.parametrize("kind", MTAS)
@pytest.mark.parametrize("transport", ["inet", "unix"])
def test_greylist_then_accept_with_headers(world, kind, transport):
    srv, make = world
    mta = make(kind, transport)
    r = mta.send("192.0.2.10", "alice@spf.example", ["bob@example.test"])
    assert r == [(450, "4.2.0 <bob@example.test>: Recipient address rejected: Greylisted, see "
                       "http://postgrey.schweikert.ch/help/example.test.html")]
    time.sleep(2.2)
    r = mta.send("192.0.2.10", "alice@spf.example", ["bob@example.test"])
    assert r[0][0] == 250, r
    h = headers(mta.delivered("bob@example.test")[0])
    assert h.count("X-Greylist: delayed ") == 1, h
    assert h.count("Received-SPF: pass (policy.test: domain of spf.example designates "
                   "192.0.2.10 as permitted sender) client-ip=192.0.2.10; "
                   "envelope-from=alice@spf.example; helo=mail.example.org; "
                   "receiver=policy.test; identity=mailfrom") == 1, h
    srv.wait_log(r"decision: client=mail\.example\.org\[192\.0\.2\.10\], helo=<mail\.example\.org>, "
                 r"from=<alice@spf\.example>, to=<bob@example\.test>, state=RCPT, .*greylist=pass")


@pytest.mark.parametrize("kind", MTAS)
def test_spf_fail_access_reject_and_bcc(world, kind):
    srv, make = world
    srv.set(greylist_whitelist_clients=srv.file("wl", "192.0.2\n203.0.113\n"))
    srv.program.signal(signal.SIGHUP)
    srv.wait_log(r"reload -- configuration")
    mta = make(kind)
    r = mta.send("203.0.113.5", "alice@spf.example", ["bob@example.test"])
    assert r == [(550, "5.7.23 <bob@example.test>: Recipient address rejected: Message rejected "
                       "due to: SPF fail - not authorized. Please see http://www.openspf.net/Why?"
                       "s=mfrom;id=alice@spf.example;ip=203.0.113.5;r=policy.test")]
    r = mta.send("192.0.2.10", "spammer@spf.example", ["bob@example.test"])
    assert r == [(554, "5.7.1 <bob@example.test>: Recipient address rejected: no thanks")]
    r = mta.send("192.0.2.10", "archived@spf.example", ["bob@example.test", "carol@example.test"])
    assert [c for c, _ in r] == [250, 250]
    assert len(mta.delivered("bob@example.test")) == 1
    assert len(mta.delivered("carol@example.test")) == 1
    assert len(mta.delivered("archive@example.test")) == 1
    time.sleep(0.5)
    assert len(mta.delivered("archive@example.test")) == 1      # one copy, not one per recipient
