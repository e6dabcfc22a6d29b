"""test_socketmap.py - socketmap: tables through `tern map query`.

A small socketmap server (Sendmail protocol: netstring "name key" in,
netstring "OK value" / "NOTFOUND " / "TEMP reason" ... out) runs in a
thread on a free loopback port or a UNIX socket; the tests check what an
admin sees from `tern map query`: the value and exit 0, exit 1 for not
found, exit 2 with the server's reason for failures, and that one
connection is reused across keys (and re-made when the server drops it).
Where Postfix's postmap is installed, its answers are compared too.
"""

import os
import shutil
import socket
import subprocess
import threading

import pytest

import harness

MAX_REPLY = 100000  # Postfix's limit on a reply's payload


def netstring(data):
    return b"%d:%s," % (len(data), data)


class SocketmapServer:
    """Answers by key prefix: temp*, timeout*, perm*, nf*, big*, exact*,
    null*, bad*; anything else gets "OK got <key>". Records requests and
    counts connections; close_after_reply makes it hang up after each
    answer (a server with a short idle timeout)."""

    def __init__(self, family="inet", path=None, close_after_reply=False):
        self.requests = []
        self.connections = 0
        self.close_after_reply = close_after_reply
        if family == "inet":
            self.port = harness.free_port()
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", self.port))
            self.endpoint = "inet:127.0.0.1:%d" % self.port
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.endpoint = "unix:%s" % path
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _reply(self, key):
        for prefix, reply in (
                (b"temp", b"TEMP try later"),
                (b"timeout", b"TIMEOUT server busy"),
                (b"perm", b"PERM broken map"),
                (b"nf", b"NOTFOUND "),
                (b"exact", b"OK " + b"x" * (MAX_REPLY - 3)),
                (b"big", b"OK " + b"x" * (MAX_REPLY - 2)),
                (b"null", b"OK a\0b"),
                (b"bad", b"WHAT is this")):
            if key.startswith(prefix):
                return reply
        return b"OK got " + key

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._session(conn)

    def _session(self, conn):
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            while b":" in data:
                length, rest = data.split(b":", 1)
                n = int(length)
                if len(rest) < n + 1:
                    break
                request, data = rest[:n], rest[n + 1:]
                assert rest[n:n + 1] == b","
                self.requests.append(request)
                name, key = request.split(b" ", 1)
                try:
                    conn.sendall(netstring(self._reply(key)))
                except OSError:
                    return
                if self.close_after_reply:
                    return

    def spec(self, name="mymap"):
        return "socketmap:%s:%s" % (self.endpoint, name)

    def close(self):
        self.sock.close()


@pytest.fixture
def server():
    srv = SocketmapServer()
    yield srv
    srv.close()


def query(spec, key):
    return harness.run_tern("map", "query", "-q", key, spec)


def test_found_value_and_unfolded_key(server):
    rc, out, err = query(server.spec(), "Hello World")
    assert (rc, out) == (0, "got Hello World\n"), err
    # The key goes out as given (no case folding), after the map name.
    assert server.requests == [b"mymap Hello World"]


def test_not_found(server):
    rc, out, err = query(server.spec(), "nf-key")
    assert (rc, out) == (1, "")


@pytest.mark.parametrize("key,reason", [
    ("temp", "temporary error: try later"),
    ("timeout", "timeout: server busy"),
    ("perm", "permanent error: broken map"),
    ("bad", "malformed reply"),
    ("null", "null byte"),
])
def test_server_failures_are_errors(server, key, reason):
    rc, out, err = query(server.spec(), key)
    assert rc == 2 and out == ""
    assert reason in err


def test_reply_size_limit(server):
    rc, out, err = query(server.spec(), "exact")
    assert rc == 0 and out == "x" * (MAX_REPLY - 3) + "\n"
    rc, out, err = query(server.spec(), "big")
    assert rc == 2 and "exceeds limit 100000" in err


def test_connection_reused_across_keys(server):
    rc, out, err = harness.run_tern("map", "query", "-q", "-", server.spec(),
                                    input="a\nnf1\nb\ntemp\nc\n")
    # Stops at the first error, as postmap -q - does.
    assert rc == 2 and out == "a\tgot a\nb\tgot b\n"
    assert server.connections == 1
    assert server.requests == [b"mymap a", b"mymap nf1", b"mymap b", b"mymap temp"]


def test_reconnect_when_server_hangs_up():
    srv = SocketmapServer(close_after_reply=True)
    try:
        rc, out, err = harness.run_tern("map", "query", "-q", "-", srv.spec(),
                                        input="a\nb\nc\n")
        assert (rc, out) == (0, "a\tgot a\nb\tgot b\nc\tgot c\n"), err
        assert srv.connections == 3
    finally:
        srv.close()


def test_unix_socket(tmp_path):
    srv = SocketmapServer(family="unix", path=str(tmp_path / "sm.sock"))
    try:
        rc, out, err = query(srv.spec("other"), "k")
        assert (rc, out) == (0, "got k\n"), err
        assert srv.requests == [b"other k"]
    finally:
        srv.close()


def test_server_down():
    port = harness.free_port()
    rc, out, err = query("socketmap:inet:127.0.0.1:%d:m" % port, "k")
    assert rc == 2 and "Connection refused" in err


@pytest.mark.parametrize("spec", [
    "socketmap:inet:127.0.0.1:25",       # no map name
    "socketmap:tcp:127.0.0.1:25:m",      # unknown endpoint type
    "socketmap:inet::25:m",
    "socketmap:unix::m",
])
def test_bad_specs(spec):
    rc, out, err = query(spec, "k")
    assert rc == 2 and "expected inet:host:port:name or unix:pathname:name" in err


@pytest.mark.skipif(shutil.which("postmap") is None, reason="postfix not installed")
@pytest.mark.parametrize("key", ["Hello", "nf", "a b"])
def test_same_answers_as_postmap(server, key):
    want = subprocess.run(["postmap", "-q", key, server.spec()],
                          capture_output=True, text=True, timeout=30)
    rc, out, err = query(server.spec(), key)
    assert (rc, out) == (want.returncode, want.stdout)
