"""test_policy_peers.py - real third-party policy services with ternd,
unchanged: postgrey 1.37 (greylisting: DEFER_IF_PERMIT, then PREPEND
X-Greylist once the delay has passed) and postfix-policyd-spf-python
(SPF with TXT records from a dnsmasq; it speaks on stdin/stdout, so here
it is started per connection, as Postfix's spawn(8) or a socket unit with
Accept=yes would), and a stdin/stdout policy program run by ternd itself
through a spawn: endpoint."""

import os
import pwd
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

import harness
from restr_util import mailbox, session, start_ternd


def test_postgrey(tmp_path, config_dir, start_program):
    dbdir = tmp_path / "postgrey"
    dbdir.mkdir()
    pw = pwd.getpwnam("postgrey") if os.getuid() == 0 else pwd.getpwuid(os.getuid())
    os.chown(dbdir, pw.pw_uid, pw.pw_gid)
    harness.traversable(dbdir)
    port = harness.free_port()
    argv = ["/usr/sbin/postgrey", "--inet=127.0.0.1:%d" % port, "--dbdir=%s" % dbdir,
            "--delay=2", "--auto-whitelist-clients=0", "--hostname=grey.test",
            "--whitelist-clients=/dev/null", "--whitelist-recipients=/dev/null",
            "--pidfile=%s" % (tmp_path / "postgrey.pid")]
    if os.getuid() == 0:
        argv += ["--user=%s" % pw.pw_name, "--group=%s" % pw.pw_name]
    start_program(argv, ready=port, name="postgrey", check_exit=False)
    tport = start_ternd(config_dir, start_program,
                        smtpd_recipient_restrictions="reject_unauth_destination, "
                        "check_policy_service inet:127.0.0.1:%d" % port)
    s = session(tport)
    s.cmd("MAIL FROM:<sender@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == (
        "450 4.2.0 <joe@example.test>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.test.html")
    s.close()
    time.sleep(3)  # --delay=2
    s = session(tport)
    s.cmd("MAIL FROM:<sender@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.message().startswith("250 2.0.0 Ok: queued as ")
    s.close()
    msg = mailbox(config_dir, "joe")[0]
    head = msg.split(b"\n\n")[0]
    assert b"\nX-Greylist: delayed " in head and b"by postgrey-1.37 at grey.test" in head, msg


# --- SPF ------------------------------------------------------------------------

def _dns_addr():
    return "127.%d.%d.%d" % (random.randrange(60, 250), random.randrange(1, 250),
                             random.randrange(2, 250))


class Spawner:
    """Accept on 127.0.0.1:port and run argv per connection with the
    socket as stdin/stdout (what spawn(8) does for Postfix)."""

    def __init__(self, argv):
        self.argv = argv
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.procs = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.procs.append(subprocess.Popen(self.argv, stdin=c.fileno(), stdout=c.fileno(),
                                               stderr=subprocess.DEVNULL))
            c.close()

    def stop(self):
        self.sock.close()
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root for a private /etc/resolv.conf")
def test_policyd_spf(tmp_path, config_dir, start_program):
    addr = _dns_addr()
    argv = harness.dnsmasq_argv(53, txt={"example.org": "v=spf1 ip4:192.0.2.10 -all",
                                         "softfail.example": "v=spf1 ~all"})
    argv = [a if not a.startswith("--listen-address=") else "--listen-address=" + addr
            for a in argv]
    start_program(argv, name="dnsmasq",
                  ready=lambda: _answers(addr))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver %s\n" % addr)
    conf = tmp_path / "policyd-spf.conf"
    conf.write_text("debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n"
                    "PermError_reject = False\nTempError_Defer = False\n"
                    "skip_addresses = 127.0.0.0/8\n")
    # policyd-spf reads /etc/resolv.conf: give it ours in a mount namespace
    spawner = Spawner(["unshare", "--mount", "sh", "-c",
                       "mount --bind %s /etc/resolv.conf && exec /usr/bin/policyd-spf %s"
                       % (resolv, conf)])
    try:
        port = start_ternd(config_dir, start_program,
                           smtpd_recipient_restrictions="reject_unauth_destination, "
                           "check_policy_service { inet:127.0.0.1:%d, timeout=20s }"
                           % spawner.port)
        s = session(port, client=("192.0.2.66", "mail.other.example"), helo="mail.other.example")
        s.cmd("MAIL FROM:<a@example.org>")
        r = s.cmd("RCPT TO:<joe@example.test>")
        assert r.startswith("550 5.7.23 <joe@example.test>: Recipient address rejected: "
                            "Message rejected due to: SPF fail - not authorized."), r
        s.close()
        s = session(port, client=("192.0.2.10", "mail.example.org"), helo="mail.example.org")
        s.cmd("MAIL FROM:<a@example.org>")
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        assert s.message().startswith("250 ")
        s.close()
        msg = mailbox(config_dir, "joe")[0]
        assert b"\nReceived-SPF: Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.10;" in msg, msg
    finally:
        spawner.stop()


def _answers(addr):
    try:
        harness.dns_query("ready.invalid", "A", 53, host=addr, timeout=0.3)
        return True
    except OSError:
        return False


# --- spawn: ---------------------------------------------------------------------

STDIO_POLICY = r'''
import sys
n = 0
req = {}
for line in sys.stdin:
    line = line.rstrip("\n")
    if line:
        k, _, v = line.partition("=")
        req[k] = v
        continue
    n += 1
    rcpt = req.get("recipient", "")
    if rcpt.startswith("alice@"):
        sys.stdout.write("action=REJECT stdio says no (request %d)\n\n" % n)
    else:
        sys.stdout.write("action=DUNNO\n\n")
    sys.stdout.flush()
    req = {}
'''


def test_spawned_stdio_policy_program(tmp_path, config_dir, start_program):
    prog = config_dir.write_file("stdio_policy.py", STDIO_POLICY, mode=0o755)
    port = start_ternd(config_dir, start_program,
                       smtpd_recipient_restrictions="reject_unauth_destination, "
                       "check_policy_service { { spawn:%s %s }, timeout=10s }"
                       % (sys.executable if os.path.exists(sys.executable) else "/usr/bin/python3",
                          prog))
    s = session(port)
    s.cmd("MAIL FROM:<a@example.org>")
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.cmd("RCPT TO:<alice@example.test>") == \
        "554 5.7.1 <alice@example.test>: Recipient address rejected: stdio says no (request 2)"
    s.close()
