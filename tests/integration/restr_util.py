"""restr_util.py - helpers shared by the restriction, policy, BCC and
explain tests: start ternd with a virtual mailbox domain (example.test:
joe, alice, archive), a raw SMTP client, and a recording policy server
(Postfix's policy protocol, server side) whose answers and misbehaviour
(hang, garbage, close in the middle of a reply) a test chooses."""

import re
import socket
import threading
import time

import harness

MAILBOXES = {"joe@example.test": "example.test/joe/",
             "alice@example.test": "example.test/alice/",
             "archive@example.test": "example.test/archive/"}


def start_ternd(cfg, start_program, **settings):
    """ternd on cfg with example.test delivered to maildirs; returns the port."""
    vbase = cfg.path / "vmail"
    vbase.mkdir(exist_ok=True)
    harness.give_to_mail_owner(vbase)
    cfg.set(smtpd_peername_lookup="no", mydestination="", local_recipient_maps="",
            alias_maps="", virtual_mailbox_domains="example.test",
            virtual_mailbox_maps="inline:{ %s }" % ", ".join("%s=%s" % kv
                                                             for kv in MAILBOXES.items()),
            virtual_mailbox_base=str(vbase), smtpd_authorized_xclient_hosts="127.0.0.0/8",
            smtpd_client_connection_count_limit="0")
    for k, v in settings.items():
        cfg.set(k.replace("__", "."), v)
    cfg.program = start_program([harness.tern_bin("ternd"), "-f", "-c", str(cfg.path)],
                                ready=cfg.smtp_port)
    return cfg.smtp_port


def mailbox(cfg, user, n=1, timeout=10.0):
    """Wait for n messages in example.test/<user>/new; returns them (bytes)."""
    d = cfg.path / "vmail" / "example.test" / user / "new"
    deadline = time.time() + timeout
    files = []
    while time.time() < deadline:
        files = sorted(d.glob("*")) if d.exists() else []
        if len(files) >= n:
            break
        time.sleep(0.05)
    return [f.read_bytes() for f in files]


def log_text(cfg):
    prog = getattr(cfg, "program", None)
    return (prog.stderr() if prog else "") + cfg.maillog()


def wait_log(cfg, pattern, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, log_text(cfg), re.M)
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError("%r not in log:\n%s" % (pattern, log_text(cfg)))


class Smtp:
    def __init__(self, port, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        self.greeting = self.reply()

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

    def cmd(self, line):
        self.sock.sendall((line + "\r\n").encode())
        return self.reply()

    def message(self, body="Subject: test\r\n\r\nhello\r\n"):
        assert self.cmd("DATA").startswith("354")
        self.sock.sendall((body + ".\r\n").encode())
        return self.reply()

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


def session(port, client=("192.0.2.10", "client.example.net"), helo="client.example.net"):
    s = Smtp(port)
    s.cmd("EHLO probe.example")
    if client:
        assert s.cmd("XCLIENT NAME=%s REVERSE_NAME=%s ADDR=%s"
                     % (client[1], client[1], client[0])).startswith("220")
    assert s.cmd("EHLO %s" % helo).startswith("250")
    return s


class PolicyServer:
    """A policy service on 127.0.0.1:port. answer(request dict) -> action
    text (or None: no reply). mode: "normal", "slow" (answer after 1s),
    "hang" (read, never answer),
    "garbage" (a reply without action=), "cut" (half a reply, then close),
    "close" (close the connection after each answer)."""

    def __init__(self, answer=lambda req: "DUNNO", mode="normal"):
        self.answer, self.mode = answer, mode
        self.requests = []  # each: list of (name, value) in order
        self.connections = 0
        self.active = self.max_active = 0  # connections open at once
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.endpoint = "inet:127.0.0.1:%d" % self.port
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                req = []
                while True:
                    line = f.readline()
                    if not line:
                        return
                    line = line.decode("utf-8", "replace").rstrip("\n")
                    if line == "":
                        break
                    k, _, v = line.partition("=")
                    req.append((k, v))
                with self.lock:
                    self.requests.append(req)
                if self.mode == "hang":  # never answer; notice the client leaving
                    while f.read(4096):
                        pass
                    return
                if self.mode == "garbage":
                    c.sendall(b"this is not a policy reply\n\n")
                    continue
                if self.mode == "cut":
                    c.sendall(b"act")
                    return
                if self.mode == "slow":  # a busy server: answers after a second
                    time.sleep(1.0)
                action = self.answer(dict(req))
                if action is not None:
                    c.sendall(("action=%s\n\n" % action).encode())
                if self.mode == "close":
                    return
        except OSError:
            return
        finally:
            c.close()
            with self.lock:
                self.active -= 1

    def stop(self):
        self.stopped.set()
        self.sock.close()
