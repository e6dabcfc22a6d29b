"""test_smtpd_tls.py - TLS and SMTP AUTH in ternd's SMTP server, from the
outside: the seed-001 transcripts (openssl s_client -starttls smtp, AUTH
PLAIN on a submission listener), swaks --tls --auth PLAIN/LOGIN, the
server side of the STARTTLS injection battery (perf-security.md §7),
AUTH refused before TLS, smtpd_tls_security_level = encrypt, wrapper mode
(smtps), RSA+ECDSA certificates from smtpd_tls_chain_files, certificates
re-read on reload, the Received: header, log lines and policy attributes,
permit_sasl_authenticated, the AUTH failure limit, and "tern passwd".

A test CA and server certificates are made with the openssl command line
once per module; passwords are hashed by "tern passwd" itself.
"""

import base64
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness
from test_smtpd import VMAIL_MAP, Smtp, log_text, maildir_messages, wait_maillog

PASSWORD = "s3cret pass"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _server_cert(d, name, cn, keyargs):
    _openssl("req", "-newkey", *keyargs, "-nodes", "-subj", "/CN=%s" % cn,
             "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
    (d / ("%s.ext" % name)).write_text("subjectAltName=DNS:%s\n" % cn)
    _openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "%s.ext" % name,
             "-out", "%s.pem" % name, cwd=d)
    # key first, then certificate, then the CA: smtpd_tls_chain_files order
    (d / ("%s.chain" % name)).write_text(
        (d / ("%s.key" % name)).read_text() + (d / ("%s.pem" % name)).read_text() +
        (d / "ca.pem").read_text())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA; RSA and ECDSA certificates for tern.test; an RSA one for
    other.test (the reload test swaps it in)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=Tern Test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _server_cert(d, "rsa", "tern.test", ["rsa:2048"])
    _server_cert(d, "ecdsa", "tern.test", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    _server_cert(d, "other", "other.test", ["rsa:2048"])
    for p in d.iterdir():
        p.chmod(0o644)
    harness.traversable(d)
    return d


def client_ctx(pki):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.check_hostname = False
    return ctx


@pytest.fixture
def ternd_tls(config_dir, start_program, pki):
    """ternd with STARTTLS (may) on the smtp listener and a submission
    listener with AUTH (passwd file with alice's password), TLS required
    there; returns (cfg, smtp_port, submission_port)."""

    def start(passwd=True, **settings):
        vbase = config_dir.path / "vmail"
        vbase.mkdir(exist_ok=True)
        harness.give_to_mail_owner(vbase)
        sub_port, smtps_port = harness.free_ports(2)
        if passwd:
            harness.run_tern("passwd", str(config_dir.path / "sasl_passwd"), "alice",
                             input=PASSWORD + "\n", check=True)
            harness.give_to_mail_owner(config_dir.path / "sasl_passwd")
        config_dir.set(smtpd_peername_lookup="no",
                       local_recipient_maps="inline:{joe=x, alice=x}",
                       alias_maps="",
                       virtual_mailbox_domains="example.test",
                       virtual_mailbox_maps=VMAIL_MAP,
                       virtual_mailbox_base=str(vbase),
                       smtpd_tls_security_level="may",
                       smtpd_tls_chain_files=str(pki / "rsa.chain"),
                       listen_submission="127.0.0.1:%d" % sub_port)
        config_dir.set("submission.smtpd_sasl_auth_enable", "yes")
        config_dir.set("submission.smtpd_tls_security_level", "encrypt")
        config_dir.set("submission.smtpd_recipient_restrictions",
                       "permit_sasl_authenticated, reject")
        config_dir.set("submission.smtpd_relay_restrictions",
                       "permit_sasl_authenticated, reject_unauth_destination")
        for k, v in settings.items():
            config_dir.set(k.replace("__", "."), v)
        config_dir.sub_port = sub_port
        config_dir.smtps_port = smtps_port
        config_dir.program = start_program(
            [harness.tern_bin("ternd"), "-f", "-c", str(config_dir.path)],
            ready=config_dir.smtp_port)
        return config_dir, config_dir.smtp_port, sub_port

    return start


class TlsSmtp(Smtp):
    """Smtp with STARTTLS: the same socket, wrapped after the 220."""

    def starttls(self, pki):
        r = self.cmd("STARTTLS")
        assert r == "220 2.0.0 Ready to start TLS", r
        self.tls_handshake(pki)

    def tls_handshake(self, pki):
        self.sock = client_ctx(pki).wrap_socket(self.sock, server_hostname="tern.test")
        self.f = self.sock.makefile("rb")


def plain_b64(user, password, authz=""):
    return base64.b64encode(("%s\0%s\0%s" % (authz, user, password)).encode()).decode()


def b64(text):
    return base64.b64encode(text.encode()).decode()


# --- seed 001: openssl s_client -starttls smtp ------------------------------


def s_client(port, *extra):
    """openssl s_client -connect ... -starttls smtp, driven line by line
    like an admin at the keyboard; returns (proc, reader)."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-starttls", "smtp", *extra],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    out = []

    def pump():
        for line in p.stdout:
            out.append(line.decode("utf-8", "replace"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return p, out


def s_client_type(p, out, line, expect, timeout=10.0):
    """Type a line, wait until the output has a line matching expect."""
    if line is not None:
        p.stdin.write((line + "\n").encode())
        p.stdin.flush()
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = "".join(out)
        if re.search(expect, text, re.M):
            return text
        time.sleep(0.05)
    raise AssertionError("%r not seen after %r:\n%s" % (expect, line, "".join(out)))


def test_seed_001_starttls_s_client(ternd_tls, pki):
    """The seed's command verbatim: openssl s_client -connect host:port
    -starttls smtp, then commands typed at it."""
    cfg, port, _ = ternd_tls()
    p, out = s_client(port)
    try:
        text = s_client_type(p, out, None, r"^250 CHUNKING")
        assert re.search(r"New, TLSv1\.3, Cipher is TLS_", text)
        assert "subject=CN = tern.test" in text
        s_client_type(p, out, "ehlo Me", r"^250 CHUNKING[\s\S]*^250 CHUNKING")
        s_client_type(p, out, "mail from:<someone@example.com>", r"^250 2\.1\.0 Ok")
        s_client_type(p, out, "rcpt to: joe", r"^250 2\.1\.5 Ok")
        s_client_type(p, out, "quit", r"^221 2\.0\.0 Bye")
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    wait_maillog(cfg, r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: "
                      r"TLSv1\.3 with cipher TLS_\S+ \(\d+/\d+ bits\)")
    wait_maillog(cfg, r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 starttls=1 mail=1 "
                      r"rcpt=1 quit=1 commands=6")


def test_starttls_message_and_received(ternd_tls, pki):
    """A message over STARTTLS (s_client -crlf: only <CR><LF>.<CR><LF>
    ends DATA), its Received: header and log lines."""
    cfg, port, _ = ternd_tls()
    p, out = s_client(port, "-crlf", "-CAfile", str(pki / "ca.pem"))
    try:
        text = s_client_type(p, out, None, r"^250 CHUNKING")
        assert "Verify return code: 0 (ok)" in text
        s_client_type(p, out, "EHLO client.example", r"^250 CHUNKING[\s\S]*^250 CHUNKING")
        s_client_type(p, out, "mail from:<someone@example.com>", r"^250 2\.1\.0 Ok")
        s_client_type(p, out, "rcpt to:<joe@example.test>", r"^250 2\.1\.5 Ok")
        s_client_type(p, out, "DATA", r"^354 End data")
        s_client_type(p, out, "Subject: hi\n\nThis is a test.\n.", r"^250 2\.0\.0 Ok: queued as")
        s_client_type(p, out, "quit", r"^221 2\.0\.0 Bye")  # "Q..." would quit s_client
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    msgs = maildir_messages(cfg)
    assert len(msgs) == 1
    head = msgs[0].split(b"\n\n", 1)[0].decode()
    assert re.search(r"^Received: from client\.example \(unknown \[127\.0\.0\.1\]\)\n"
                     r"\t\(using TLSv1\.3 with cipher TLS_\S+ \(\d+/\d+ bits\)\)\n"
                     r"\t\(No client certificate requested\)\n"
                     r"\tby tern\.test \(Tern\) with ESMTPS id ", head, re.M), head
    wait_maillog(cfg, r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: "
                      r"TLSv1\.3 with cipher TLS_\S+ \(\d+/\d+ bits\)")
    wait_maillog(cfg, r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 starttls=1 mail=1 "
                      r"rcpt=1 data=1 quit=1 commands=7")


def test_seed_001_auth_plain_on_submission(ternd_tls, pki):
    cfg, _, sub = ternd_tls()
    p, out = s_client(sub, "-CAfile", str(pki / "ca.pem"))
    try:
        s_client_type(p, out, None, r"^250 CHUNKING")
        text = s_client_type(p, out, "EHLO client.example",
                             r"^250 CHUNKING[\s\S]*^250 CHUNKING")
        assert "250-AUTH PLAIN LOGIN" in text
        s_client_type(p, out, "AUTH PLAIN " + plain_b64("alice", PASSWORD),
                      r"^235 2\.7\.0 Authentication successful")
        s_client_type(p, out, "MAIL FROM:<alice@example.test>", r"^250 2\.1\.0 Ok")
        s_client_type(p, out, "rcpt to:<someone@elsewhere.example>", r"^250 2\.1\.5 Ok")
        s_client_type(p, out, "quit", r"^221 2\.0\.0 Bye")  # "Q..." would quit s_client
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    wait_maillog(cfg, r"client=unknown\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice")
    wait_maillog(cfg, r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 starttls=1 auth=1 mail=1 "
                      r"rcpt=1 quit=1 commands=7")


# --- swaks -------------------------------------------------------------------


def swaks(port, *args):
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port),
                           "--from", "alice@example.test", "--to", "joe@example.test",
                           "--helo", "client.example", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_tls_auth(ternd_tls, mech):
    cfg, _, sub = ternd_tls()
    r = swaks(sub, "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", PASSWORD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as", r.stdout), r.stdout
    wait_maillog(cfg, r"sasl_method=%s, sasl_username=alice" % mech)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_tls_auth_wrong_password(ternd_tls, mech):
    cfg, _, sub = ternd_tls()
    r = swaks(sub, "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", "wrong")
    assert r.returncode != 0
    assert "535 5.7.8 Error: authentication failed: authentication failure" in r.stdout
    wait_maillog(cfg, r"warning: unknown\[127\.0\.0\.1\]: SASL %s authentication failed: "
                      r"authentication failure, sasl_username=alice" % mech)


def test_swaks_unknown_user(ternd_tls):
    cfg, _, sub = ternd_tls()
    r = swaks(sub, "--tls", "--auth", "PLAIN", "--auth-user", "mallory",
              "--auth-password", PASSWORD)
    assert "535 5.7.8" in r.stdout


# --- AUTH rules ----------------------------------------------------------------


def test_auth_refused_before_tls(ternd_tls, pki):
    cfg, port, _ = ternd_tls(smtpd_sasl_auth_enable="yes")
    s = TlsSmtp(port)
    s.reply()
    ehlo = s.cmd("EHLO client.example")
    assert "250-STARTTLS" in ehlo and "AUTH" not in ehlo, ehlo
    # no password on the wire before TLS (RFC 4954 §4): refused before a 334
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD)) == \
        "538 5.7.11 Encryption required for requested authentication mechanism"
    assert s.cmd("AUTH LOGIN") == \
        "538 5.7.11 Encryption required for requested authentication mechanism"
    s.starttls(pki)
    ehlo = s.cmd("EHLO client.example")
    assert "250-AUTH PLAIN LOGIN" in ehlo and "STARTTLS" not in ehlo, ehlo
    assert s.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert s.cmd(b64("alice")) == "334 UGFzc3dvcmQ6"
    assert s.cmd(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
    assert s.cmd("AUTH PLAIN") == "503 5.5.1 Error: already authenticated"


def test_auth_protocol_errors(ternd_tls, pki):
    cfg, _, sub = ternd_tls()
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    assert s.cmd("AUTH PLAIN") == "503 5.5.1 Error: send HELO/EHLO first"
    s.cmd("EHLO client.example")
    assert s.cmd("AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication type"
    assert s.cmd("AUTH PLAIN") == "334 "  # an empty challenge
    assert s.cmd("*") == "501 5.7.0 Authentication aborted"
    assert s.cmd("AUTH PLAIN") == "334 "  # an empty challenge
    assert s.cmd("not base64!") == "501 5.5.2 Cannot decode response"
    # acting for someone else (authzid) is not allowed
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD, authz="bob")).startswith("535 5.7.8")
    # the initial response may be "=" (empty): not a valid PLAIN message
    assert s.cmd("AUTH PLAIN =").startswith("535 5.7.8")
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    assert s.cmd("MAIL FROM:<alice@example.test> AUTH=<>") == "250 2.1.0 Ok"
    assert s.cmd("RSET") == "250 2.0.0 Ok"
    assert s.cmd("MAIL FROM:<alice@example.test> AUTH=alice+40example.test") == "250 2.1.0 Ok"
    assert s.cmd("AUTH PLAIN") == "503 5.5.1 Error: already authenticated"
    assert s.cmd("RSET") == "250 2.0.0 Ok"
    assert s.cmd("MAIL FROM:<alice@example.test> AUTH=bad=x").startswith("501 5.5.4")


def test_submission_requires_auth(ternd_tls, pki):
    cfg, _, sub = ternd_tls()
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    # encrypt: mail commands only after STARTTLS
    assert s.cmd("MAIL FROM:<a@example.org>") == "530 5.7.0 Must issue a STARTTLS command first"
    s.starttls(pki)
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    r = s.cmd("RCPT TO:<joe@example.test>")
    assert r.startswith("554 5.7.1"), r
    assert s.cmd("RSET") == "250 2.0.0 Ok"
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    assert s.cmd("MAIL FROM:<alice@example.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    # relaying for an authenticated client (permit_sasl_authenticated)
    assert s.cmd("RCPT TO:<someone@elsewhere.example>") == "250 2.1.5 Ok"


def test_auth_failure_limit(ternd_tls, pki):
    cfg, _, sub = ternd_tls(smtpd_client_auth_failure_limit="2",
                            smtpd_client_event_limit_exceptions="")
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    s.cmd("EHLO client.example")
    for _ in range(2):
        assert s.cmd("AUTH PLAIN " + plain_b64("alice", "guess")).startswith("535 5.7.8")
    r = s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD))
    assert r == "421 4.7.0 tern.test Error: too many failed authentications from 127.0.0.1", r
    assert s.closed()
    # the limit is per client, not per connection
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    s.cmd("EHLO client.example")
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD)).startswith("421 4.7.0")


# --- the STARTTLS injection battery (server side) ------------------------------


@pytest.mark.parametrize("injected", ["NOOP", "RSET", "MAIL FROM:<evil@example.org>",
                                      "AUTH PLAIN " + plain_b64("alice", PASSWORD)])
def test_injection_dropped(ternd_tls, injected):
    """STARTTLS and more in one segment: disconnected before any TLS."""
    cfg, port, _ = ternd_tls()
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    s.send("STARTTLS\r\n%s\r\n" % injected)
    assert s.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
    assert s.closed()
    wait_maillog(cfg, r"improper command pipelining after STARTTLS from unknown\[127\.0\.0\.1\]: "
                      + re.escape(injected[:20]))


@pytest.mark.parametrize("injected", ["NOOP", "RSET", "MAIL FROM:<evil@example.org>"])
def test_injection_discarded(ternd_tls, pki, injected):
    """With smtpd_forbid_unauth_pipelining = no (Postfix's purge): the
    plaintext is dropped; over TLS the first reply answers the client's
    own first command."""
    cfg, port, _ = ternd_tls(smtpd_forbid_unauth_pipelining="no")
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    s.send("STARTTLS\r\n%s\r\n" % injected)
    assert s.reply() == "220 2.0.0 Ready to start TLS"
    s.tls_handshake(pki)
    r = s.cmd("HELO after.example")
    assert r == "250 tern.test", r
    # no transaction was opened by the injected MAIL
    assert s.cmd("RCPT TO:<joe@example.test>") == "503 5.5.1 Error: need MAIL command"


def test_second_starttls(ternd_tls, pki):
    cfg, port, _ = ternd_tls()
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    assert s.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"


def test_starttls_in_transaction_and_state_reset(ternd_tls, pki):
    cfg, port, _ = ternd_tls()
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO before.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("STARTTLS") == "503 5.5.1 Error: MAIL transaction in progress"
    assert s.cmd("RSET") == "250 2.0.0 Ok"
    s.starttls(pki)
    # RFC 3207 §4.2: the EHLO before TLS is forgotten
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.cmd("DATA").startswith("354")
    assert s.cmd("Subject: x\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued")
    msg = maildir_messages(cfg)[0].decode()
    assert "before.example" not in msg
    assert re.search(r"^Received: from unknown \(unknown \[127\.0\.0\.1\]\)", msg, re.M), msg
    assert "with SMTPS" not in msg and "with SMTP id" in msg  # no EHLO after TLS


def test_starttls_not_offered_without_level(ternd_tls):
    cfg, port, _ = ternd_tls(smtpd_tls_security_level="none")
    s = Smtp(port)
    s.reply()
    assert "STARTTLS" not in s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "502 5.5.1 Error: command not implemented"


def test_handshake_failure_closes(ternd_tls):
    cfg, port, _ = ternd_tls()
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    s.send("EHLO plaintext.example\r\n")  # not a TLS record: no fallback
    assert s.closed()
    wait_maillog(cfg, r"SSL_accept error from unknown\[127\.0\.0\.1\]")
    wait_maillog(cfg, r"lost connection after STARTTLS from unknown\[127\.0\.0\.1\]")


def test_handshake_timeout(ternd_tls):
    cfg, port, _ = ternd_tls(smtpd_starttls_timeout="1s")
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    assert s.closed(timeout=5)
    wait_maillog(cfg, r"timeout after STARTTLS from unknown\[127\.0\.0\.1\]")


# --- wrapper mode, certificates, reload ----------------------------------------


def test_wrapper_mode_smtps(ternd_tls, pki):
    cfg, port, _ = ternd_tls(passwd=True)
    # ternd is running: add the smtps listener by reload
    cfg.set("listen_smtps", "127.0.0.1:%d" % cfg.smtps_port)
    cfg.set("smtps.smtpd_tls_wrappermode", "yes")
    cfg.set("smtps.smtpd_sasl_auth_enable", "yes")
    harness.run_tern("reload", config_dir=cfg, check=True)
    harness.wait_for(lambda: harness.port_accepts(cfg.smtps_port), what="smtps listener")
    raw = socket.create_connection(("127.0.0.1", cfg.smtps_port), timeout=10)
    s = TlsSmtp.__new__(TlsSmtp)
    s.sock = client_ctx(pki).wrap_socket(raw, server_hostname="tern.test")
    s.f = s.sock.makefile("rb")
    assert s.reply() == "220 tern.test ESMTP Tern"
    ehlo = s.cmd("EHLO client.example")
    assert "STARTTLS" not in ehlo and "250-AUTH PLAIN LOGIN" in ehlo, ehlo
    assert s.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"
    assert s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD)) == \
        "235 2.7.0 Authentication successful"


def peer_key(port, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-starttls", "smtp", *args], input=b"QUIT\n",
                       capture_output=True, timeout=30)
    text = r.stdout.decode("utf-8", "replace")
    m = re.search(r"Server public key is (\d+) bit", text)
    subj = re.search(r"subject=(.*)", text)
    return (m.group(1) if m else None), (subj.group(1) if subj else None), text


def test_rsa_and_ecdsa_chain_files(ternd_tls, pki):
    cfg, port, _ = ternd_tls(
        smtpd_tls_chain_files="%s, %s" % (pki / "rsa.chain", pki / "ecdsa.chain"))
    bits, _, text = peer_key(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert bits == "256", text
    bits, _, text = peer_key(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert bits == "2048", text
    # the chain (CA) is sent with the certificate
    _, _, text = peer_key(port, "-showcerts")
    assert text.count("-----BEGIN CERTIFICATE-----") == 2, text


def test_cert_file_and_protocol_floor(ternd_tls, pki):
    cfg, port, _ = ternd_tls(smtpd_tls_chain_files="",
                             smtpd_tls_cert_file=str(pki / "rsa.pem"),
                             smtpd_tls_key_file=str(pki / "rsa.key"))
    bits, subj, text = peer_key(port)
    assert bits == "2048" and "tern.test" in subj, text
    # the default floor is TLSv1.2
    _, _, text = peer_key(port, "-tls1_1")
    assert "Cipher is (NONE)" in text or "no protocols available" in text or \
        "alert" in text, text


def test_certificates_reread_on_reload(ternd_tls, pki, tmp_path):
    live = tmp_path / "live.chain"
    live.write_text((pki / "rsa.chain").read_text())
    harness.traversable(tmp_path)
    live.chmod(0o644)
    cfg, port, _ = ternd_tls(smtpd_tls_chain_files=str(live))
    _, subj, text = peer_key(port)
    assert "tern.test" in subj, text
    live.write_text((pki / "other.chain").read_text())
    harness.run_tern("reload", config_dir=cfg, check=True)
    harness.wait_for(lambda: "other.test" in (peer_key(port)[1] or ""), what="new certificate")
    # a broken certificate is refused and the running one kept
    live.write_text("not a certificate\n")
    rc, out, err = harness.run_tern("reload", config_dir=cfg)
    assert rc != 0 and "smtpd_tls_chain_files" in out + err, out + err
    wait_maillog(cfg, r"reload refused, keeping the running configuration: smtpd_tls_chain_files")
    assert "other.test" in peer_key(port)[1]


def test_missing_certificate_refuses_start(config_dir):
    config_dir.set(smtpd_tls_security_level="may")
    rc, out, err = harness.run_tern("check", config_dir=config_dir)
    assert rc != 0 and "certificate" in (out + err), out + err


def test_unknown_sasl_type_refused(config_dir):
    config_dir.set(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="cyrus")
    rc, out, err = harness.run_tern("check", config_dir=config_dir)
    assert rc != 0 and "cyrus" in (out + err), out + err


# --- policy attributes ---------------------------------------------------------


class PolicyCatcher:
    """A policy server that records requests and answers DUNNO."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        while True:
            data = c.recv(65536)
            if not data:
                return
            buf += data
            while b"\n\n" in buf:
                req, buf = buf.split(b"\n\n", 1)
                self.requests.append(dict(l.split("=", 1) for l in req.decode().split("\n")
                                          if "=" in l))
                c.sendall(b"action=DUNNO\n\n")


def test_policy_gets_tls_and_sasl_attributes(ternd_tls, pki):
    pol = PolicyCatcher()
    cfg, _, sub = ternd_tls(**{
        "submission.smtpd_recipient_restrictions":
            "check_policy_service inet:127.0.0.1:%d, permit_sasl_authenticated, reject"
            % pol.port})
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    s.cmd("EHLO client.example")
    s.cmd("AUTH PLAIN " + plain_b64("alice", PASSWORD))
    assert s.cmd("MAIL FROM:<alice@example.test> AUTH=alice@example.test") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    req = pol.requests[-1]
    assert req["sasl_method"] == "PLAIN"
    assert req["sasl_username"] == "alice"
    assert req["sasl_sender"] == "alice@example.test"
    assert req["encryption_protocol"] == "TLSv1.3"
    assert req["encryption_cipher"].startswith("TLS_")
    assert int(req["encryption_keysize"]) >= 128


# --- tern passwd ---------------------------------------------------------------


def test_tern_passwd(tmp_path):
    f = tmp_path / "pw"
    harness.run_tern("passwd", f, "alice", input="one\n", check=True)
    harness.run_tern("passwd", "-m", "sha512", f, "bob", input="two\n", check=True)
    lines = f.read_text().splitlines()
    assert lines[0].startswith("alice:$y$") and lines[1].startswith("bob:$6$"), lines
    assert (f.stat().st_mode & 0o777) == 0o640
    harness.run_tern("passwd", f, "alice", input="three\n", check=True)
    lines = f.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("bob:") and lines[1].startswith("alice:$y$")
    harness.run_tern("passwd", "-d", f, "bob", check=True)
    assert [l.split(":")[0] for l in f.read_text().splitlines()] == ["alice"]
    rc, _, err = harness.run_tern("passwd", f, "carol", input="")
    assert rc != 0 and "no password" in err
    rc, _, err = harness.run_tern("passwd", f, "bad:name", input="x\n")
    assert rc != 0


# --- login-mismatch rules, check_sasl_access -----------------------------------


def _auth_session(sub, pki, user="alice"):
    s = TlsSmtp(sub)
    s.reply()
    s.cmd("EHLO client.example")
    s.starttls(pki)
    s.cmd("EHLO client.example")
    if user:
        assert s.cmd("AUTH PLAIN " + plain_b64(user, PASSWORD)) == \
            "235 2.7.0 Authentication successful"
    return s


@pytest.mark.parametrize("rule,auth,sender,ok", [
    # alice owns alice@ and everything @team.example; bob@ is bob's
    ("reject_sender_login_mismatch", True, "alice@example.test", True),
    ("reject_sender_login_mismatch", True, "alice+tag@example.test", True),
    ("reject_sender_login_mismatch", True, "x@team.example", True),
    ("reject_sender_login_mismatch", True, "bob@example.test", False),
    ("reject_sender_login_mismatch", True, "nobody@else.example", False),
    ("reject_sender_login_mismatch", False, "bob@example.test", False),
    ("reject_sender_login_mismatch", False, "nobody@else.example", True),
    ("reject_known_sender_login_mismatch", True, "nobody@else.example", True),
    ("reject_known_sender_login_mismatch", True, "bob@example.test", False),
    ("reject_authenticated_sender_login_mismatch", False, "bob@example.test", True),
    ("reject_authenticated_sender_login_mismatch", True, "bob@example.test", False),
    ("reject_unauthenticated_sender_login_mismatch", True, "bob@example.test", True),
    ("reject_unauthenticated_sender_login_mismatch", False, "bob@example.test", False),
])
def test_sender_login_mismatch(ternd_tls, pki, rule, auth, sender, ok):
    cfg, _, sub = ternd_tls(**{
        "smtpd_sender_login_maps":
            "inline:{alice@example.test=alice, bob@example.test=bob, @team.example=alice}",
        "recipient_delimiter": "+",
        "submission.smtpd_sender_restrictions": rule,
        "submission.smtpd_recipient_restrictions": "permit"})
    s = _auth_session(sub, pki, "alice" if auth else None)
    assert s.cmd("MAIL FROM:<%s>" % sender) == "250 2.1.0 Ok"
    r = s.cmd("RCPT TO:<joe@example.test>")
    if ok:
        assert r == "250 2.1.5 Ok", r
    elif auth:
        assert r == "553 5.7.1 <%s>: Sender address rejected: not owned by user alice" % sender
    else:
        assert r == "553 5.7.1 <%s>: Sender address rejected: not logged in" % sender


def test_check_sasl_access(ternd_tls, pki, config_dir):
    t = config_dir.write_table("sasl_access", "alice REJECT suspended account\n")
    cfg, _, sub = ternd_tls(**{
        "submission.smtpd_recipient_restrictions":
            "check_sasl_access texthash:%s, permit_sasl_authenticated, reject" % t})
    s = _auth_session(sub, pki)
    assert s.cmd("MAIL FROM:<alice@example.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<joe@example.test>") == "554 5.7.1 <alice>: SASL login name rejected: suspended account"


# --- a real Postfix as TLS and AUTH client --------------------------------------


def test_postfix_relays_over_tls_with_auth(ternd_tls, pki, tmp_path):
    """Postfix's smtp client (smtp_tls_security_level = verify, Cyrus SASL
    PLAIN/LOGIN from smtp_sasl_password_maps) hands a message to ternd's
    submission listener; ternd records ESMTPSA and the login."""
    import smtplib
    from pfinstance import PostfixInstance

    cfg, _, sub = ternd_tls()
    pw = tmp_path / "sasl_passwd"
    pw.write_text("[127.0.0.1]:%d alice:%s\n" % (sub, PASSWORD))
    harness.traversable(tmp_path)
    pw.chmod(0o644)
    pf = PostfixInstance(tmp_path / "postfix", harness.free_port(),
                         transport={"example.test": "smtp:[127.0.0.1]:%d" % sub},
                         main={"smtp_tls_security_level": "verify",
                               "smtp_tls_CAfile": str(pki / "ca.pem"),
                               "smtp_tls_verify_cert_match": "tern.test",
                               "smtp_tls_loglevel": "1",
                               "smtp_sasl_auth_enable": "yes",
                               "smtp_sasl_password_maps": "texthash:%s" % pw,
                               "smtp_sasl_security_options": "noanonymous",
                               "relay_domains": "example.test"})
    pf.start()
    try:
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as c:
            c.sendmail("alice@example.test", ["joe@example.test"],
                       "Subject: via postfix\r\n\r\nrelayed over TLS\r\n")
        pf.wait_log(r"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]"
                    r":%d: TLSv1\.3" % sub, timeout=30)
        pf.wait_log(r"to=<joe@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                    r".*status=sent" % sub, timeout=30)
    finally:
        pf.stop()
    msgs = maildir_messages(cfg)
    assert len(msgs) == 1
    assert b"with ESMTPSA id" in msgs[0] and b"relayed over TLS" in msgs[0]
    wait_maillog(cfg, r"client=unknown\[127\.0\.0\.1\], sasl_method=(PLAIN|LOGIN), "
                      r"sasl_username=alice")


# --- the sandbox of "make run" ---------------------------------------------------


def test_make_run_submission_seed_001(tmp_path, start_program):
    """conf/run/tern.conf with the files "make run-tls" makes: the seed-001
    STARTTLS and AUTH PLAIN transcript against its submission listener
    (ports moved off 2525/2587 so a running sandbox is not disturbed)."""
    run = tmp_path / "run"
    run.mkdir()
    smtp, sub = harness.free_ports(2)
    conf = (harness.REPO / "conf" / "run" / "tern.conf").read_text()
    conf = conf.replace("127.0.0.1:2525", "127.0.0.1:%d" % smtp)
    conf = conf.replace("127.0.0.1:2587", "127.0.0.1:%d" % sub)
    conf = conf.replace("mail_owner = tern", "mail_owner = %s" % harness.mail_owner())
    (run / "tern.conf").write_text(conf)
    r = subprocess.run(["make", "-C", str(harness.REPO), "--no-print-directory", "run-tls",
                        "RUNDIR=%s" % run, "BUILD=%s" % harness.BUILD],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (run / "sasl_passwd").read_text().startswith("alice@example.test:$y$")
    (run / "mail").mkdir()
    harness.traversable(tmp_path)
    harness.give_to_mail_owner(run)
    start_program([harness.tern_bin("ternd"), "-f", "-c", str(run)], ready=smtp)
    p, out = s_client(sub)
    try:
        s_client_type(p, out, None, r"^250 CHUNKING")
        text = s_client_type(p, out, "ehlo me", r"^250 CHUNKING[\s\S]*^250 CHUNKING")
        assert "250-AUTH PLAIN LOGIN" in text
        s_client_type(p, out, "AUTH PLAIN " + plain_b64("alice@example.test", "alice-secret"),
                      r"^235 2\.7\.0 Authentication successful")
        s_client_type(p, out, "mail from:<alice@example.test>", r"^250 2\.1\.0 Ok")
        s_client_type(p, out, "rcpt to: joe", r"^250 2\.1\.5 Ok")
        s_client_type(p, out, "quit", r"^221 2\.0\.0 Bye")
    finally:
        p.stdin.close()
        p.wait(timeout=10)


# --- Dovecot's auth server as the back end --------------------------------------

DOVECOT = "/usr/sbin/dovecot"


def start_dovecot(tmp_path, start_program, mechanisms):
    """A real Dovecot auth server with alice (passwd-file made by "tern
    passwd") offering `mechanisms`; returns its socket."""
    d = tmp_path / "dovecot"
    (d / "run").mkdir(parents=True)
    (d / "state").mkdir()
    harness.run_tern("passwd", str(d / "users"), "alice", input=PASSWORD + "\n", check=True)
    (d / "users").chmod(0o644)
    harness.traversable(tmp_path)
    d.chmod(0o755)
    conf = d / "dovecot.conf"
    conf.write_text("""\
base_dir = {d}/run
state_dir = {d}/state
instance_name = tern-test-{port}
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = {mechs}
auth_failure_delay = 0
log_path = {d}/dovecot.log
passdb {{
  driver = passwd-file
  args = scheme=CRYPT {d}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {d}/auth {{
    mode = 0666
  }}
}}
""".format(d=d, port=harness.free_port(), mechs=mechanisms))
    sock = d / "auth"
    start_program([DOVECOT, "-F", "-c", str(conf)], ready=sock.exists, name="dovecot")
    return sock


@pytest.fixture
def dovecot_auth(tmp_path, start_program):
    """A real Dovecot auth server (dovecot-core) on a unix socket, with
    alice in a passwd-file written by "tern passwd"; returns the socket."""
    return start_dovecot(tmp_path, start_program, "plain login")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_dovecot_sasl(ternd_tls, dovecot_auth, mech):
    cfg, _, sub = ternd_tls(passwd=False, **{"submission.smtpd_sasl_type": "dovecot",
                                             "submission.smtpd_sasl_path": str(dovecot_auth)})
    r = swaks(sub, "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", PASSWORD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    wait_maillog(cfg, r"sasl_method=%s, sasl_username=alice" % mech)
    r = swaks(sub, "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", "wrong")
    assert "535 5.7.8 Error: authentication failed: authentication failure" in r.stdout
    assert len(maildir_messages(cfg)) == 1


def test_dovecot_down_is_a_temporary_failure(ternd_tls, tmp_path):
    cfg, _, sub = ternd_tls(passwd=False, **{"submission.smtpd_sasl_type": "dovecot",
                                             "submission.smtpd_sasl_path": str(tmp_path / "none")})
    r = swaks(sub, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
              "--auth-password", PASSWORD)
    assert "454 4.7.0 Temporary authentication failure" in r.stdout, r.stdout
    wait_maillog(cfg, r"SASL PLAIN authentication failed: dovecot auth server")


def test_new_tls_session_rate_limit(ternd_tls, pki):
    cfg, port, _ = ternd_tls(smtpd_client_new_tls_session_rate_limit="2",
                             smtpd_client_event_limit_exceptions="")
    for _ in range(2):
        s = TlsSmtp(port)
        s.reply()
        s.cmd("EHLO client.example")
        s.starttls(pki)
        assert s.cmd("QUIT") == "221 2.0.0 Bye"
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "454 4.7.0 Error: too many new TLS sessions from 127.0.0.1"
    # plaintext goes on (level may)
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    wait_maillog(cfg, r"New TLS session rate limit exceeded: from unknown\[127\.0\.0\.1\]")


def test_xclient_login(ternd_tls):
    """XCLIENT LOGIN= (proxies, tests) sets the SASL login, as Postfix."""
    cfg, port, _ = ternd_tls(smtpd_authorized_xclient_hosts="127.0.0.0/8",
                             smtpd_recipient_restrictions="permit_sasl_authenticated, reject")
    s = Smtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("XCLIENT LOGIN=carol").startswith("220")
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<carol@example.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<someone@elsewhere.example>") == "250 2.1.5 Ok"
    wait_maillog(cfg, r"client=unknown\[127\.0\.0\.1\], sasl_method=XCLIENT, sasl_username=carol")
    assert s.cmd("RSET") == "250 2.0.0 Ok"
    assert s.cmd("XCLIENT LOGIN=[UNAVAILABLE]").startswith("220")
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<carol@example.test>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<someone@elsewhere.example>").startswith("554 5.7.1")


# --- client certificates ---------------------------------------------------------


@pytest.fixture(scope="module")
def client_certs(pki):
    """A client certificate from the test CA, and a self-signed one."""
    d = pki
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=client.example",
             "-keyout", "client.key", "-out", "client.csr", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "client.pem", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=stranger.example", "-keyout", "self.key", "-out", "self.pem", cwd=d)
    for p in d.iterdir():
        p.chmod(0o644)
    return d


def cert_fingerprint(pem_path):
    import hashlib
    der = ssl.PEM_cert_to_DER_cert(pem_path.read_text())
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def ccert_session(port, pki, cert):
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    ctx = client_ctx(pki)
    if cert:
        ctx.load_cert_chain(str(pki / ("%s.pem" % cert)), str(pki / ("%s.key" % cert)))
    s.sock = ctx.wrap_socket(s.sock, server_hostname="tern.test")
    s.f = s.sock.makefile("rb")
    return s


def test_client_certificates(ternd_tls, pki, client_certs, config_dir):
    pol = PolicyCatcher()
    self_fp = cert_fingerprint(pki / "self.pem")
    access = config_dir.write_table("ccert_access", "%s OK\n" % self_fp)
    cfg, port, _ = ternd_tls(
        smtpd_tls_ask_ccert="yes", smtpd_tls_CAfile=str(pki / "ca.pem"),
        smtpd_relay_restrictions="check_policy_service inet:127.0.0.1:%d, "
                                 "permit_tls_all_clientcerts, check_ccert_access texthash:%s, "
                                 "reject_unauth_destination" % (pol.port, access))
    # trusted: relays, and the facts are everywhere
    s = ccert_session(port, pki, "client")
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<x@elsewhere.example>") == "250 2.1.5 Ok"
    req = pol.requests[-1]
    assert req["ccert_subject"] == "client.example"
    assert req["ccert_issuer"] == "Tern+20Test+20CA"
    assert req["ccert_fingerprint"] == cert_fingerprint(pki / "client.pem")
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", req["ccert_pubkey_fingerprint"])
    assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
    assert s.cmd("DATA").startswith("354")
    assert s.cmd("Subject: x\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued")
    msg = maildir_messages(cfg)[0].decode()
    assert '\t(Client CN "client.example", Issuer "Tern Test CA" (verified OK))\n' in msg, msg
    wait_maillog(cfg, r"Trusted TLS connection established from unknown\[127\.0\.0\.1\]")
    # self-signed: untrusted, subject not given to policy; allowed by fingerprint
    s = ccert_session(port, pki, "self")
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<x@elsewhere.example>") == "250 2.1.5 Ok"
    req = pol.requests[-1]
    assert req["ccert_subject"] == "" and req["ccert_fingerprint"] == self_fp
    wait_maillog(cfg, r"Untrusted TLS connection established from unknown\[127\.0\.0\.1\]")
    # none: relay denied
    s = ccert_session(port, pki, None)
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<x@elsewhere.example>").startswith("554 5.7.1")
    assert pol.requests[-1]["ccert_fingerprint"] == ""


def test_relay_clientcerts_and_req_ccert(ternd_tls, pki, client_certs):
    cfg, port, sub = ternd_tls(
        smtpd_tls_ask_ccert="yes", smtpd_tls_CAfile=str(pki / "ca.pem"),
        relay_clientcerts="inline:{%s=client.example}" % cert_fingerprint(pki / "client.pem"),
        smtpd_relay_restrictions="permit_tls_clientcerts, reject_unauth_destination",
        submission__smtpd_tls_req_ccert="yes")
    s = ccert_session(port, pki, "client")
    s.cmd("EHLO client.example")
    assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert s.cmd("RCPT TO:<x@elsewhere.example>") == "250 2.1.5 Ok"
    # submission requires a trusted certificate (it is at level encrypt)
    s = ccert_session(sub, pki, None)
    assert s.reply() == "421 4.7.1 tern.test Error: no client certificate"
    s = ccert_session(sub, pki, "self")
    assert s.reply() == "421 4.7.1 tern.test Error: untrusted client certificate"
    s = ccert_session(sub, pki, "client")
    assert s.cmd("EHLO client.example").startswith("250-")
