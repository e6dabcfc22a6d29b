"""milterworld.py - one of Tern's milters under a private real Postfix.

The milter runs in the foreground (`tern-X-milter -f -c FILE`) on a free
loopback port; a PostfixInstance (pfinstance.py) uses it through
`smtpd_milters = inet:127.0.0.1:PORT` with `milter_default_action =
tempfail`, so a milter that is down or misbehaves shows up as a 451, not
as mail that silently passed. Mail is sent with smtplib and read back from
the instance's virtual maildirs.

Used by test_milter_*.py through the `milter_world` fixture:

    w = milter_world("archive", conf_text, mailboxes={...})
    w.send("a@x.test", ["b@y.test"], message_bytes) -> (code, text)
    w.wait_mail("b@y.test", n) -> [email.message.Message, ...]
"""

import email
import os
import email.policy
import smtplib
import time
from pathlib import Path

import pytest

import harness
from pfinstance import PostfixInstance

PF_HOST = "mx.pf.test"


class MilterWorld:
    def __init__(self, start_program, tmp_path, name, conf, mailboxes, pf_main=None,
                 files=None):
        self.tmp = Path(tmp_path)
        self.tmp.mkdir(parents=True, exist_ok=True)
        harness.traversable(self.tmp)
        self.name = name
        self.port = harness.free_port()
        for fname, text in (files or {}).items():
            p = self.tmp / fname
            p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
            p.chmod(0o644)
        self.conf_path = self.tmp / ("%s-milter.conf" % name)
        self.conf_path.write_text("socket = inet:%d@127.0.0.1\n%s" % (self.port, conf))
        self.conf_path.chmod(0o644)
        self._start_program = start_program
        self.milter = None
        main = {"smtpd_milters": "inet:127.0.0.1:%d" % self.port,
                "milter_default_action": "tempfail",
                "milter_protocol": "6",
                "smtpd_authorized_xclient_hosts": "127.0.0.0/8"}
        main.update(pf_main or {})
        self.pf = PostfixInstance(self.tmp / "postfix", harness.free_port(), myhostname=PF_HOST,
                                  mailboxes=mailboxes, main=main)

    def start(self):
        argv = [harness.tern_bin("tern-%s-milter" % self.name), "-f", "-c", self.conf_path]
        if os.environ.get("TERN_MILTER_VERBOSE"):
            argv.append("-v")
        self.milter = self._start_program(argv, ready=self.port, name="tern-%s-milter" % self.name)
        self.pf.start()
        return self

    def log(self):
        return self.milter.output() if self.milter else ""

    def send(self, sender, rcpts, msg, helo="client.test", xclient=None):
        """One SMTP transaction; returns (code, text) of the DATA reply, or
        of the first refused command."""
        with smtplib.SMTP("127.0.0.1", self.pf.port, local_hostname=helo, timeout=30) as s:
            s.ehlo(helo)
            if xclient:
                # The client as Postfix (and so the milter) sees it:
                # needs smtpd_authorized_xclient_hosts (set below).
                code, text = s.docmd("XCLIENT", xclient)
                assert code == 220, (code, text)
                s.ehlo(helo)
            code, text = s.mail(sender)
            if code >= 400:
                return code, text.decode()
            for r in rcpts:
                code, text = s.rcpt(r)
                if code >= 400:
                    return code, text.decode()
            try:
                code, text = s.data(msg)
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
            return code, text.decode() if isinstance(text, bytes) else text

    def maildir(self, address):
        return self.pf.maildir(address) / "new"

    def messages(self, address):
        new = self.maildir(address)
        paths = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)) \
            if new.is_dir() else []
        return [p.read_bytes() for p in paths]

    def wait_mail(self, address, n=1, timeout=15.0, raw=False):
        deadline = time.monotonic() + timeout
        while len(self.messages(address)) < n:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "timed out waiting for %d message(s) for %s (have %d)\n--- milter log ---\n%s"
                    "\n--- postfix ---\n%s" % (n, address, len(self.messages(address)),
                                               self.log()[-3000:], self.pf.maillog_summary()[-4000:]))
            time.sleep(0.05)
        msgs = self.messages(address)
        if raw:
            return msgs
        return [email.message_from_bytes(m, policy=email.policy.compat32) for m in msgs]

    def queue_ids(self, queue):
        base = self.pf.queue_dir / queue
        return sorted(p.name for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


@pytest.fixture
def milter_world(start_program, tmp_path):
    """Factory: milter_world(name, conf_text, mailboxes, pf_main=None,
    files=None) -> a started MilterWorld; Postfix is stopped at teardown,
    the milter by start_program's teardown."""
    worlds = []

    def make(name, conf, mailboxes, pf_main=None, files=None, sub=None):
        w = MilterWorld(start_program, tmp_path / (sub or name), name, conf, mailboxes,
                        pf_main=pf_main, files=files)
        worlds.append(w)
        return w.start()

    yield make
    for w in worlds:
        w.pf.stop()
