"""policyd_helpers.py - drive tern-policyd from tests.

PolicyServer writes a policyd.conf (loopback listener on a free port,
pid file, LMDB state and log inside the test directory) and starts
`tern-policyd -f -c FILE` through the start_program fixture. PolicyClient
speaks the Postfix policy protocol: request(**attrs) sends one request
with Postfix's full attribute set (every attribute, empty when unknown,
as smtpd does) and returns the action, or None when the server closed
the connection without a reply.
"""

import os
import re
import socket
import time
from pathlib import Path

import harness

POSTFIX_ATTRS = [
    "request", "protocol_state", "protocol_name", "helo_name", "queue_id", "sender",
    "recipient", "recipient_count", "client_address", "client_name", "reverse_client_name",
    "instance", "sasl_method", "sasl_username", "sasl_sender", "size", "ccert_subject",
    "ccert_issuer", "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "etrn_domain", "stress", "client_port",
    "policy_context", "server_address", "server_port", "compatibility_level", "mail_version",
]

DEFAULTS = {
    "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
    "helo_name": "mail.example.org", "sender": "alice@example.org",
    "recipient": "bob@example.test", "recipient_count": "0",
    "client_address": "192.0.2.10", "client_name": "mail.example.org",
    "reverse_client_name": "mail.example.org", "instance": "a1.b2.c3.0",
    "size": "0", "encryption_keysize": "0", "client_port": "40000",
    "server_address": "127.0.0.1", "server_port": "25",
    "compatibility_level": "3.6", "mail_version": "3.7.11",
}


def encode(attrs):
    return "".join("%s=%s\n" % (k, v) for k, v in attrs.items()) + "\n"


def full_request(**attrs):
    """Postfix's attribute set with test defaults, overridden by attrs
    (None removes an attribute; unknown names are appended)."""
    out = {}
    for name in POSTFIX_ATTRS:
        out[name] = DEFAULTS.get(name, "")
    for k, v in attrs.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


class PolicyClient:
    def __init__(self, addr, timeout=10.0):
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(addr)
        else:
            self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def read_reply(self):
        """One reply's attributes as a dict, or None on EOF without a reply."""
        while b"\n\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        reply, self.buf = self.buf.split(b"\n\n", 1)
        return dict(line.split("=", 1) for line in reply.decode().split("\n"))

    def request(self, **attrs):
        self.send_raw(encode(full_request(**attrs)))
        reply = self.read_reply()
        return None if reply is None else reply["action"]

    def closed(self, timeout=5.0):
        """True if the server closes the connection (EOF) without sending
        anything more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        return data == b"" and self.buf == b""

    def close(self):
        self.sock.close()


class PolicyServer:
    """A tern-policyd with its own directory, config and listener."""

    def __init__(self, start_program, path, foreground=True, **settings):
        self.start_program = start_program
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        harness.traversable(self.dir)
        os.chmod(self.dir, 0o777)       # the server runs as "tern" under root
        self.port = harness.free_port()
        self.conf_path = self.dir / "policyd.conf"
        self.pid_file = self.dir / "policyd.pid"
        self.settings = {
            "listen": "inet:127.0.0.1:%d" % self.port,
            "pid_file": str(self.pid_file),
            "state": "lmdb:%s" % (self.dir / "state"),
            "myhostname": "policy.test",
            "worker_threads": "2",
        }
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.program = None
        self.write()

    def write(self):
        self.conf_path.write_text("".join("%s = %s\n" % kv for kv in self.settings.items()))

    def set(self, **settings):
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.write()

    def file(self, name, text):
        p = self.dir / name
        p.write_text(text)
        os.chmod(p, 0o644)
        return p

    def argv(self, *extra):
        return [harness.tern_bin("tern-policyd"), *extra, "-c", self.conf_path]

    def start(self, check_exit=True):
        self.program = self.start_program(self.argv("-f"), ready=self.port,
                                          name="tern-policyd", check_exit=check_exit)
        return self

    def stop(self):
        if self.program:
            self.program.stop()

    def client(self):
        return PolicyClient(("127.0.0.1", self.port))

    def log(self):
        return self.program.output() if self.program else ""

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not rx.search(self.log()):
            if time.monotonic() > deadline:
                raise AssertionError("tern-policyd did not log /%s/:\n%s" % (pattern, self.log()))
            time.sleep(0.05)
        return rx.search(self.log())
