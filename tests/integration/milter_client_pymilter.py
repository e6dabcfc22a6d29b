"""milter_client_pymilter.py - a libmilter milter (pymilter) for the
milter-client tests: /usr/bin/python3 milter_client_pymilter.py PORT|PATH MODE LOG

It records every callback (with the macros it can see) as JSON lines in
LOG, and acts by MODE:
  record      accept everything
  edits       at end of message, every edit at once (headers added,
              inserted, changed, deleted, recipients added/deleted,
              sender changed, body replaced with > 64 KiB), then accept
  rcpt        RCPT: bad* -> 550 multi-line, temp* -> 451 custom, drop* ->
              550 plain; else continue
  reject-eom  end of message: 550 5.7.1 with "%%" in the text
  tempfail-eom  end of message: plain tempfail
  discard     end of message: discard
  quarantine  end of message: quarantine "test quarantine", accept
  hang-eom    never answer the end of message
  slow-progress  take 4 s at the end of message, sending PROGRESS every 0.8 s
  close-eom   exit at the end of the message (connection drops)
  tag:NAME    add header X-Tag: NAME and report the X-Tag headers seen
  rcptrej     negotiate SMFIP_RCPT_REJ (see the recipients the MTA refused)
"""

import json
import os
import sys
import time

import Milter

PORT, MODE, LOG = sys.argv[1], sys.argv[2], sys.argv[3]  # PORT: number or /socket/path
MACROS = ["i", "j", "_", "v", "{daemon_name}", "{daemon_addr}", "{client_addr}",
          "{client_name}", "{mail_addr}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]


def record(kind, **kw):
    with open(LOG, "a") as f:
        f.write(json.dumps(dict(kind=kind, **kw)) + "\n")


class TestMilter(Milter.Base):
    def __init__(self):
        self.headers = []

    def macros(self):
        out = {}
        for m in MACROS:
            v = self.getsymval(m)
            if v is not None:
                out[m] = v
        return out

    def connect(self, hostname, family, hostaddr):
        record("connect", host=hostname, addr=str(hostaddr), macros=self.macros())
        return Milter.CONTINUE

    def hello(self, name):
        record("helo", name=name)
        return Milter.CONTINUE

    def envfrom(self, f, *args):
        self.headers = []
        record("mail", sender=f, args=list(args), macros=self.macros())
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        record("rcpt", rcpt=to, args=list(args), macros=self.macros())
        if MODE == "rcpt":
            if to.startswith("<bad"):
                self.setreply("550", "5.7.1", "no such user %% here", "second line")
                return Milter.REJECT
            if to.startswith("<temp"):
                self.setreply("451", "4.7.1", "come back later")
                return Milter.TEMPFAIL
            if to.startswith("<drop"):
                return Milter.REJECT
        return Milter.CONTINUE

    def data(self):
        record("data")
        return Milter.CONTINUE

    def unknown(self, cmd):
        record("unknown", cmd=cmd)
        return Milter.CONTINUE

    def header(self, name, value):
        self.headers.append([name, value])
        return Milter.CONTINUE

    def eoh(self):
        record("eoh", headers=self.headers)
        return Milter.CONTINUE

    def body(self, chunk):
        record("body", size=len(chunk))
        return Milter.CONTINUE

    def abort(self):
        record("abort")
        return Milter.CONTINUE

    def eom(self):
        record("eom", macros=self.macros())
        if MODE == "edits":
            return self.all_edits()
        if MODE == "reject-eom":
            self.setreply("550", "5.7.1", "rejected 100%% by test")
            return Milter.REJECT
        if MODE == "tempfail-eom":
            return Milter.TEMPFAIL
        if MODE == "discard":
            return Milter.DISCARD
        if MODE == "quarantine":
            self.quarantine("test quarantine")
            return Milter.ACCEPT
        if MODE == "hang-eom":
            time.sleep(3600)
        if MODE == "slow-progress":
            for _ in range(5):
                time.sleep(0.8)
                self.progress()
        if MODE == "close-eom":
            os._exit(0)
        if MODE.startswith("tag:"):
            self.addheader("X-Tag", MODE[4:])
        return Milter.ACCEPT

    def all_edits(self):
        self.progress()
        self.addheader("X-Added", "appended")
        self.addheader("X-Multi", "line1\n\tline2")
        self.addheader("X-Inserted-0", "at index 0", 0)
        self.addheader("X-Inserted-2", "at index 2", 2)
        self.chgheader("Subject", 1, "changed subject")
        self.chgheader("X-Delete-Me", 1, "")
        self.chgheader("X-Twice", 1, "")   # live list: the old #2 is #1 now
        self.chgheader("X-Twice", 1, "second, changed")
        self.chgheader("X-Missing", 3, "added by change")
        self.addrcpt("<added@example.test>")
        self.addrcpt("<alice@example.test>", "NOTIFY=NEVER")
        self.delrcpt("<archive@example.test>")
        self.chgfrom("<bounce@example.org>", "RET=HDRS")
        body = b"".join(b"line %05d %s\r\n" % (i, b"x" * 60) for i in range(1200))
        self.replacebody(body)
        return Milter.ACCEPT


def main():
    Milter.factory = TestMilter
    if MODE == "rcptrej":
        Milter.factory = Milter.enable_protocols(TestMilter, Milter.P_RCPT_REJ)
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT |
                     Milter.CHGBODY | Milter.QUARANTINE | Milter.CHGFROM |
                     Milter.ADDRCPT_PAR)
    sock = "unix:%s" % PORT if PORT.startswith("/") else "inet:%s@127.0.0.1" % PORT
    Milter.runmilter("tern-test", sock, 600)


if __name__ == "__main__":
    main()
