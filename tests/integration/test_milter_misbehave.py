"""test_milter_misbehave.py - Tern's milters against an MTA side that
misbehaves (milterclient.py speaks the protocol directly): sessions cut
off mid-message, a header of megabytes, ten thousand recipients, bytes
that are not UTF-8; and the daemon life cycle (detach, PID file, user).
"""

import os
import pwd
import re
import signal
import subprocess
import time

import pytest

import harness
from milterclient import SMFIP, MilterClient


def start_milter(start_program, tmp_path, name, conf, files=None):
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    harness.traversable(d)
    for fname, text in (files or {}).items():
        p = d / fname
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        p.chmod(0o644)
    port = harness.free_port()
    cf = d / ("%s-milter.conf" % name)
    cf.write_text("socket = inet:%d@127.0.0.1\nuser = tern\n%s" % (port, conf.replace("@DIR@",
                                                                                      str(d))))
    prog = start_program([harness.tern_bin("tern-%s-milter" % name), "-f", "-c", cf],
                         ready=port, name="tern-%s-milter" % name)
    return port, prog


def genkey(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    subprocess.run([harness.tern_bin("tern-dkim-milter"), "genkey", "-d", "example.com", "-s",
                    "sel1", "-D", d], check=True, stdout=subprocess.DEVNULL)
    (d / "sel1.private").chmod(0o644)
    return d / "sel1.private"


HEADERS = [("From", "a@example.com"), ("To", "b@example.org"), ("Subject", "hello")]


@pytest.fixture
def milters(start_program, tmp_path):
    key = genkey(tmp_path)
    return {
        "dkim": start_milter(start_program, tmp_path, "dkim",
                             "domain = example.com\nselector = sel1\nkey_file = %s\n"
                             "test_public_keys = @DIR@/keys\n" % key,
                             files={"keys": ""}),
        "rules": start_milter(start_program, tmp_path, "rules",
                              "header_checks = pcre:@DIR@/hc\nbody_checks = pcre:@DIR@/bc\n"
                              "header_size_limit = 1000\n",
                              files={"hc": b"/^Subject:.*\\xff\\xfe/ REJECT bytes matched\n"
                                           b"/^Subject: reject me/ REJECT no\n"
                                           b"/^X-Big: x{2000}/ REJECT never (truncated)\n",
                                     "bc": b"/caf\\xe9/ REJECT latin-1 body\n"
                                           b"/^redirect all$/ REDIRECT sink@example.com\n"}),
        "archive": start_milter(start_program, tmp_path, "archive",
                                "archive_recipient_maps = pcre:@DIR@/a\n",
                                files={"a": "!/@example\\.com$/ archive@example.com\n"}),
        "spf": start_milter(start_program, tmp_path, "spf",
                            "dns_servers = 127.0.0.1@%d\ndns_timeout = 1s\n"
                            % harness.free_port()),
    }


def up_to_body(c, addr="127.0.0.1"):
    """An internal client's session on c up to the body: connect, HELO,
    MAIL, HEADERS, end of header (queue ID ABC123)."""
    c.connect(addr=addr, **{"{client_addr}": addr, "j": "mx.test"})
    c.helo()
    c.mail("a@example.com")
    for name, value in HEADERS:
        c.header(name, value)
    c.macros(b"N", i="ABC123")
    c.eoh()
    return c


def full_session(port, addr="127.0.0.1"):
    c = MilterClient(port)
    try:
        c.connect(addr=addr, **{"{client_addr}": addr, "j": "mx.test"})
        c.helo()
        return c.message("a@example.com", ["b@example.org"], HEADERS, b"body\r\n")
    finally:
        c.close()


def test_sessions_cut_off_mid_message(milters):
    for name, (port, prog) in milters.items():
        for stage in ("mail", "header", "body"):
            c = MilterClient(port)
            c.connect(addr="127.0.0.1", **{"{client_addr}": "127.0.0.1"})
            c.helo()
            c.mail("a@example.com")
            c.rcpt("b@example.org")
            if stage in ("header", "body"):
                c.header("From", "a@example.com")
            if stage == "body":
                c.eoh()
                c.send(b"B", b"half a body")   # no reply awaited: cut off now
            c.sock.shutdown(2)
            c.close()
        mods, final = full_session(port)
        assert final[0] in (b"c", b"a"), (name, final)
        assert prog.alive, name
    # The DKIM milter signed the last message (loopback is internal).
    mods, final = full_session(milters["dkim"][0])
    assert any(m[0] == b"i" and b"DKIM-Signature" in m[1] for m in mods), mods


def test_huge_header_and_bytes_that_are_not_utf8(milters):
    port = milters["rules"][0]
    # One milter packet carries at most 64 KiB (libmilter closes the
    # connection on more), so a big header is 60000 bytes, and a big
    # header section is many of them.
    big = b"x" * 60000
    c = MilterClient(port)
    c.connect(addr="192.0.2.1")
    c.helo()
    # Inspected only up to header_size_limit (1000 here), so the rule that
    # needs 2000 x's cannot match; the message goes through.
    mods, final = c.message("a@example.com", ["b@example.org"],
                            HEADERS + [("X-Big", big)], b"fine\r\n")
    assert final[0] == b"c", final
    mods, final = c.message("a@example.com", ["b@example.org"],
                            [("Subject", b"caf\xe9 \xff\xfe")], b"fine\r\n")
    assert final[0] == b"y" and b"550 5.7.1 bytes matched" in final[1], final
    mods, final = c.message("a@example.com", ["b@example.org"], HEADERS,
                            b"line\r\nun caf\xe9 noir\r\n")
    assert final[0] == b"y" and b"latin-1 body" in final[1], final
    c.close()
    # The DKIM milter: a header section of megabytes is not signed, and
    # the session goes on.
    port = milters["dkim"][0]
    c = MilterClient(port)
    c.connect(addr="127.0.0.1", **{"{client_addr}": "127.0.0.1"})
    c.helo()
    mods, final = c.message("a@example.com", ["b@example.org"],
                            HEADERS + [("X-Big", big)] * 40, b"body\r\n")
    assert final[0] == b"c" and not mods, (final, mods[:2])
    mods, final = c.message("a@example.com", ["b@example.org"], HEADERS, b"body\r\n")
    assert any(m[0] == b"i" and b"DKIM-Signature" in m[1] for m in mods), mods
    c.close()
    assert "header section over" in milters["dkim"][1].output()


def test_ten_thousand_recipients(milters):
    rcpts = ["user%d@example.com" % i for i in range(10000)] + ["someone@remote.test"]
    c = MilterClient(milters["archive"][0])
    c.connect(addr="192.0.2.1")
    c.helo()
    t0 = time.monotonic()
    mods, final = c.message("a@example.com", rcpts, HEADERS, b"body\r\n")
    assert final[0] == b"c", final
    assert mods == [(b"2", b"<archive@example.com>\0NOTIFY=NEVER\0")], mods[:5]
    assert time.monotonic() - t0 < 20
    c.close()
    # REDIRECT with 10k recipients: every one removed, one added.
    c = MilterClient(milters["rules"][0])
    c.connect(addr="192.0.2.1")
    c.helo()
    mods, final = c.message("a@example.com", rcpts, HEADERS, b"redirect all\r\n")
    assert final[0] == b"c", final
    assert sum(1 for m in mods if m[0] == b"-") == len(rcpts)
    assert (b"+", b"<sink@example.com>\0") in mods
    c.close()


def test_daemon_pid_file_and_user(tmp_path):
    d = tmp_path / "daemon"
    d.mkdir()
    harness.traversable(d)
    port = harness.free_port()
    pidf = d / "archive.pid"
    log = d / "maillog"
    cf = d / "archive-milter.conf"
    cf.write_text("socket = inet:%d@127.0.0.1\npid_file = %s\nuser = tern\nmaillog_file = %s\n"
                  % (port, pidf, log))
    p = subprocess.run([harness.tern_bin("tern-archive-milter"), "-c", cf], timeout=10)
    assert p.returncode == 0          # the parent returns once detached
    pid = None
    try:
        harness.wait_for(lambda: pidf.exists() and pidf.read_text().strip(), what="pid file")
        pid = int(pidf.read_text())
        # logged after the privileges are dropped
        harness.wait_for(lambda: log.exists() and "daemon started" in log.read_text(),
                         what="daemon started")
        status = open("/proc/%d/status" % pid).read()
        uid = int([ln for ln in status.splitlines() if ln.startswith("Uid:")][0].split()[1])
        assert uid == pwd.getpwnam("tern").pw_uid
        mods, final = full_session(port)
        assert final[0] == b"c"
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            harness.wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                             "Z" in open("/proc/%d/stat" % pid).read().split(")")[1][:3],
                             what="milter to stop")
    assert "terminating" in log.read_text()


def test_decisions_from_the_mtas_macros(start_program, tmp_path):
    """Sign triggers taken from the MTA's macros as opendkim takes them
    ({auth_type}, {daemon_name}), and the archive's SASL map
    ({auth_authen}); a client outside internal_hosts is verified."""
    key = genkey(tmp_path)
    dport, _ = start_milter(start_program, tmp_path, "dkim",
                            "domain = example.com\nselector = sel1\nkey_file = %s\n"
                            "test_public_keys = @DIR@/keys\nmta_names = ORIGINATING\n" % key,
                            files={"keys": ""})
    aport, _ = start_milter(start_program, tmp_path, "archive",
                            "archive_sasl_maps = texthash:@DIR@/sasl\n",
                            files={"sasl": "bob archive@example.com\n"})

    def dkim_session(mail_macros, daemon_name=None):
        c = MilterClient(dport)
        cm = {"{client_addr}": "192.0.2.1", "j": "mx.test"}
        if daemon_name:
            cm["{daemon_name}"] = daemon_name
        c.connect(addr="192.0.2.1", **cm)
        c.helo()
        c.macros(b"M", **mail_macros)
        mods, final = c.message("a@example.com", ["b@example.org"], HEADERS, b"body\r\n")
        c.close()
        names = [m[1][4:].split(b"\0")[0] for m in mods if m[0] == b"i"]
        return names

    assert dkim_session({}) == [b"Authentication-Results"]
    assert dkim_session({"{auth_type}": "PLAIN"}) == [b"DKIM-Signature"]
    assert dkim_session({}, daemon_name="ORIGINATING") == [b"DKIM-Signature"]
    assert dkim_session({}, daemon_name="MTA") == [b"Authentication-Results"]

    for user, want, actions in (
            ("bob", [(b"2", b"<archive@example.com>\0NOTIFY=NEVER\0")], 0x1ff),
            ("alice", [], 0x1ff),
            # an MTA without ADDRCPT_PAR (0x80): a plain ADDRCPT
            ("bob", [(b"+", b"<archive@example.com>\0")], 0x1ff & ~0x80)):
        c = MilterClient(aport, actions=actions)
        c.connect(addr="192.0.2.1")
        c.helo()
        c.macros(b"M", **{"{auth_authen}": user})
        mods, final = c.message("a@example.com", ["b@example.org"], HEADERS, b"body\r\n")
        c.close()
        assert final[0] == b"c" and mods == want, (user, mods)


def test_unix_socket(start_program, tmp_path):
    d = tmp_path / "unix"
    d.mkdir()
    harness.traversable(d)
    path = d / "rules.sock"
    cf = d / "rules-milter.conf"
    (d / "hc").write_text("/^Subject: reject me/ REJECT no\n")
    cf.write_text("socket = unix:%s\nsocket_umask = 007\nuser = tern\n"
                  "header_checks = pcre:%s/hc\n" % (path, d))
    start_program([harness.tern_bin("tern-rules-milter"), "-f", "-c", cf],
                  ready=lambda: path.exists(), name="tern-rules-milter")
    assert oct(path.stat().st_mode & 0o777) == "0o770"
    assert path.stat().st_uid == pwd.getpwnam("tern").pw_uid
    c = MilterClient(path)
    c.connect(addr="192.0.2.1")
    c.helo()
    mods, final = c.message("a@example.com", ["b@example.org"],
                            [("Subject", "reject me")], b"body\r\n")
    assert final[0] == b"y" and final[1].startswith(b"550 5.7.1 no"), final
    c.close()


def test_dkim_header_lists_test_keys_and_quarantine(start_program, tmp_path):
    """sign_headers/oversign_headers reach the signature; a key file in
    place of DNS (test_public_keys); on_bad_signature = quarantine."""
    key = genkey(tmp_path)
    txt = (tmp_path / "keys" / "sel1.txt").read_text()
    record = "".join(re.findall(r'"([^"]*)"', txt))
    port, prog = start_milter(
        start_program, tmp_path, "dkim",
        "domain = example.com\nselector = sel1\nkey_file = %s\n"
        "test_public_keys = @DIR@/keys\nsign_headers = From, Subject\n"
        "oversign_headers = Subject\non_bad_signature = quarantine\n" % key,
        files={"keys": "sel1._domainkey.example.com %s\n" % record})
    c = MilterClient(port)
    c.connect(addr="127.0.0.1", **{"{client_addr}": "127.0.0.1", "j": "mx.test"})
    c.helo()
    mods, final = c.message("a@example.com", ["b@example.org"], HEADERS, b"body\r\n")
    c.close()
    sig = [m[1][4:].split(b"\0")[1] for m in mods if m[0] == b"i"][0].decode()
    h = re.search(r"\bh=([^;]*)", sig.replace("\n", "").replace("\t", "")).group(1)
    assert h.replace(" ", "") == "From:Subject:Subject", sig
    # The same message, verified from outside: pass; then tampered:
    # quarantined, accepted, with the A-R saying why.
    for body, want in ((b"body\r\n", b"dkim=pass"), (b"b0dy\r\n", b"dkim=fail")):
        c = MilterClient(port)
        c.connect(addr="192.0.2.1", **{"{client_addr}": "192.0.2.1", "j": "mx.test"})
        c.helo()
        mods, final = c.message("a@example.com", ["b@example.org"],
                                [("DKIM-Signature", sig)] + HEADERS, body)
        c.close()
        assert final[0] == b"c", final
        ar = [m[1] for m in mods if m[0] == b"i" and b"Authentication-Results" in m[1]]
        assert ar and want in ar[0], mods
        quarantined = [m for m in mods if m[0] == b"q"]
        assert bool(quarantined) == (want == b"dkim=fail"), mods


def test_dkim_body_without_replies_when_the_mta_allows(milters):
    """tern-dkim-milter takes SMFIP_NR_BODY (Postfix and ternd offer it):
    the MTA streams the body and waits only at end of message. libmilter
    offers the milter every NR_* step whatever the MTA offered and answers
    "continue" itself where the MTA did not take one: an MTA without
    NR_BODY gets a continue for each body chunk (no SKIP) and the same
    signature."""
    port = milters["dkim"][0]
    c = MilterClient(port)
    assert c.proto & SMFIP["NR_BODY"] and not c.proto & SMFIP["SKIP"]
    c.close()
    mods, final = full_session(port)
    assert final[0] == b"c" and [d[4:].split(b"\0")[0] for _, d in mods] == [b"DKIM-Signature"]

    c = MilterClient(port, steps=0x1fffff & ~SMFIP["NR_BODY"])
    try:
        assert not c.proto & SMFIP["NR_BODY"] and not c.proto & SMFIP["SKIP"]
        up_to_body(c)
        assert c.body(b"body\r\n" * 40000)[0] == b"c"     # two chunks, each answered
        mods, final = c.eom()
        assert final[0] == b"c"
        assert [d[4:].split(b"\0")[0] for _, d in mods] == [b"DKIM-Signature"]
    finally:
        c.close()


@pytest.mark.parametrize("canon", ["relaxed/simple", "simple/relaxed"])
def test_dkim_body_hashed_as_on_the_wire(start_program, tmp_path, canon):
    """The body is signed as the MTA will write it: a bare LF ends a line
    with CRLF (also when the CR of a CRLF ended the previous chunk, or
    the LF starts the next one), a last line without a line end gets
    one; the signature then verifies with dkimpy over that wire form.
    A lone CR is data, not a line end ("simple" body only: libopendkim's
    relaxed body drops a lone CR, which no verifier does)."""
    import dkim
    key = genkey(tmp_path)
    txt = (tmp_path / "keys" / "sel1.txt").read_text()
    record = "".join(re.findall(r'"([^"]*)"', txt)).encode()
    port, prog = start_milter(start_program, tmp_path, "dkim",
                              "domain = example.com\nselector = sel1\nkey_file = %s\n"
                              "canonicalization = %s\n" % (key, canon))
    cases = [
        ([b"one\ntwo\n"], b"one\r\ntwo\r\n"),
        ([b"one\r\ntwo\nthree\r\n\n"], b"one\r\ntwo\r\nthree\r\n\r\n"),
        ([b"one\r", b"\ntwo\r\n"], b"one\r\ntwo\r\n"),
        ([b"one", b"\ntwo\n", b"\n"], b"one\r\ntwo\r\n\r\n"),
        ([b"one\r\nlast"], b"one\r\nlast\r\n"),
        ([b"x" * 70000 + b"\n" + b"y\n" * 40000], b"x" * 70000 + b"\r\n" + b"y\r\n" * 40000),
    ]
    if canon.endswith("/simple"):
        cases.append(([b"one\rtwo\r\n"], b"one\rtwo\r\n"))
    for chunks, wire in cases:
        c = up_to_body(MilterClient(port))
        for chunk in chunks:
            c.body(chunk)
        mods, final = c.eom(i="ABC123")
        c.close()
        assert final[0] == b"c", (chunks, final)
        sig = [m[1][4:].split(b"\0")[1] for m in mods if m[0] == b"i"][0]
        raw = (b"DKIM-Signature:" + sig.replace(b"\n", b"\r\n") + b"\r\n" +
               b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in HEADERS) +
               b"\r\n" + wire)
        assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record), (chunks, sig)
