"""test_tls_more.py - more of ternd's server-side TLS and AUTH, from the
outside: close_notify at the end of a session (QUIT), the client's SNI
(policy attribute tls_sni, certificate chains chosen by
tls_server_sni_maps), smtpd_tls_CApath and smtpd_tls_ccert_verifydepth,
and the Dovecot back end against a real dovecot-core auth server
(mechanisms from its MECH lines in EHLO, LOGIN passed through with its
challenges, one connection per session, concurrent logins, clients that
vanish mid-exchange).

Uses test_smtpd_tls's test CA and ternd fixture; longer chains
(root -> intermediate -> leaf) are made here with openssl.
"""

import socket
import ssl
import subprocess

import pytest

import harness
from test_smtpd import log_text, wait_maillog  # noqa: F401
from test_smtpd_tls import (PASSWORD, PolicyCatcher, TlsSmtp, _openssl,  # noqa: F401
                            client_ctx, pki, start_dovecot, ternd_tls)


def strict_ctx(pki):
    """A client context for which a missing close_notify is an error
    (Python sets OP_IGNORE_UNEXPECTED_EOF by default)."""
    ctx = client_ctx(pki)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def tls_session(port, pki, server_hostname="tern.test", ctx=None):
    s = TlsSmtp(port)
    assert s.reply().startswith("220 ")
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    s.sock = (ctx or strict_ctx(pki)).wrap_socket(s.sock, server_hostname=server_hostname)
    s.f = s.sock.makefile("rb")
    return s


# --- close_notify ----------------------------------------------------------------


def test_quit_ends_tls_with_close_notify(ternd_tls, pki):
    cfg, port, _ = ternd_tls()
    s = tls_session(port, pki)
    assert s.cmd("EHLO client.example").startswith("250-")
    assert s.cmd("QUIT") == "221 2.0.0 Bye"
    s.sock.settimeout(10)
    # unwrap() sends our close_notify and reads the server's: a server
    # that just closes the socket makes it fail ("EOF occurred in
    # violation of protocol")
    s.sock.unwrap().close()


def test_wrapper_mode_quit_ends_with_close_notify(ternd_tls, pki):
    cfg, port, _ = ternd_tls()
    cfg.set("listen_smtps", "127.0.0.1:%d" % cfg.smtps_port)
    cfg.set("smtps.smtpd_tls_wrappermode", "yes")
    harness.run_tern("reload", config_dir=cfg, check=True)
    harness.wait_for(lambda: harness.port_accepts(cfg.smtps_port), what="smtps listener")
    raw = socket.create_connection(("127.0.0.1", cfg.smtps_port), timeout=10)
    s = TlsSmtp.__new__(TlsSmtp)
    s.sock = strict_ctx(pki).wrap_socket(raw, server_hostname="tern.test")
    s.f = s.sock.makefile("rb")
    assert s.reply().startswith("220 ")
    assert s.cmd("QUIT") == "221 2.0.0 Bye"
    s.sock.unwrap().close()


def test_s_client_sees_no_unexpected_eof(ternd_tls, pki):
    cfg, port, _ = ternd_tls()
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-starttls", "smtp", "-ign_eof"], input=b"QUIT\n",
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert "221 2.0.0 Bye" in out, out
    assert "unexpected eof" not in out.lower(), out


# --- SNI ---------------------------------------------------------------------------


def s_client_subject(port, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-starttls", "smtp", *args], input=b"QUIT\n",
                       capture_output=True, timeout=30)
    text = (r.stdout + r.stderr).decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith("subject="):
            return line.split("CN", 1)[-1].strip(" =")
    return "(no certificate: %s)" % text


def test_sni_maps_choose_the_certificate(ternd_tls, pki, config_dir):
    import base64
    b64 = base64.b64encode((pki / "other.chain").read_bytes()).decode()
    rel = config_dir.path / "sni-other.pem"   # relative names: the config directory
    rel.write_text((pki / "other.chain").read_text())
    rel.chmod(0o644)
    sni = config_dir.write_table("sni", "other.test %s\n.sub.test %s\nb64.test %s\n"
                                 "rel.test sni-other.pem\nbroken.test %s/nonexistent.pem\n"
                                 % (pki / "other.chain", pki / "other.chain", b64, pki))
    cfg, port, _ = ternd_tls(tls_server_sni_maps="texthash:%s" % sni)
    assert s_client_subject(port, "-servername", "other.test") == "other.test"
    assert s_client_subject(port, "-servername", "OTHER.test") == "other.test"
    assert s_client_subject(port, "-servername", "a.b.sub.test") == "other.test"
    assert s_client_subject(port, "-servername", "b64.test") == "other.test"
    assert s_client_subject(port, "-servername", "rel.test") == "other.test"
    # no entry, no SNI: the listener's certificate
    assert s_client_subject(port, "-servername", "tern.test") == "tern.test"
    assert s_client_subject(port, "-noservername") == "tern.test"
    log = wait_maillog(cfg, r"TLS SNI tern\.test from unknown\[127\.0\.0\.1\] not matched, "
                            r"using the default certificate")
    # an entry whose files cannot be read fails the handshake, and says why
    assert "no certificate" in s_client_subject(port, "-servername", "broken.test")
    wait_maillog(cfg, r"warning: TLS SNI broken\.test from unknown\[127\.0\.0\.1\]: "
                      r"tls_server_sni_maps: cannot read .*nonexistent\.pem")
    assert log


def test_policy_gets_tls_sni(ternd_tls, pki):
    pol = PolicyCatcher()
    cfg, port, _ = ternd_tls(smtpd_relay_restrictions="check_policy_service inet:127.0.0.1:%d, "
                                                      "reject_unauth_destination" % pol.port)
    for name, want in (("mail.tern.test", "mail.tern.test"), (None, "")):
        s = tls_session(port, pki, server_hostname=name)
        s.cmd("EHLO client.example")
        assert s.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
        assert s.cmd("RCPT TO:<joe@example.test>") == "250 2.1.5 Ok"
        assert pol.requests[-1]["tls_sni"] == want, pol.requests[-1]
        assert s.cmd("QUIT") == "221 2.0.0 Bye"
    # without TLS the attribute is there, empty (Postfix 3.12)
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    s.cmd("MAIL FROM:<a@example.org>")
    s.cmd("RCPT TO:<joe@example.test>")
    assert pol.requests[-1]["tls_sni"] == ""


# --- CApath and verify depth ----------------------------------------------------


@pytest.fixture(scope="module")
def deep_pki(pki):
    """An intermediate CA under the test CA, a client certificate it
    issued (deep.pem + deep.chain: leaf then intermediate), one issued by
    the root itself (flat.pem), and a CApath directory holding only the
    root, hashed by "openssl rehash"."""
    d = pki
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Tern Test Intermediate",
             "-keyout", "int.key", "-out", "int.csr", cwd=d)
    (d / "int.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                               "keyUsage=critical,keyCertSign,cRLSign\n")
    _openssl("x509", "-req", "-in", "int.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "int.ext", "-out", "int.pem", cwd=d)
    for name, ca in (("deep", "int"), ("flat", "ca")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s.client.example" % name,
                 "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
        _openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "%s.pem" % ca,
                 "-CAkey", "%s.key" % ca, "-CAcreateserial", "-days", "2",
                 "-out", "%s.pem" % name, cwd=d)
    (d / "deep.chain").write_text((d / "deep.pem").read_text() + (d / "int.pem").read_text())
    capath = d / "capath"
    capath.mkdir(exist_ok=True)
    (capath / "root.pem").write_text((d / "ca.pem").read_text())
    _openssl("rehash", str(capath), cwd=d)
    for p in list(d.iterdir()) + list(capath.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    harness.traversable(capath)
    return d


def ccert_trust(cfg, port, pki, cert, chain=None):
    """Present cert (with chain) to port; "Trusted" or "Untrusted", from
    the policy-visible fact: the Received: note of the TLS session."""
    before = log_text(cfg).count("TLS connection established")
    s = TlsSmtp(port)
    s.reply()
    s.cmd("EHLO client.example")
    assert s.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    ctx = client_ctx(pki)
    ctx.load_cert_chain(str(pki / (chain or cert + ".pem")), str(pki / (cert + ".key")))
    s.sock = ctx.wrap_socket(s.sock, server_hostname="tern.test")
    s.f = s.sock.makefile("rb")
    assert s.cmd("EHLO client.example").startswith("250-")
    s.cmd("QUIT")
    harness.wait_for(lambda: log_text(cfg).count("TLS connection established") > before,
                     what="the TLS log line")
    line = [l for l in log_text(cfg).splitlines() if "TLS connection established" in l][-1]
    return line.split(" TLS connection")[0].rsplit(" ", 1)[-1]


def test_capath_and_ccert_verifydepth(ternd_tls, deep_pki):
    pki = deep_pki
    cfg, port, sub = ternd_tls(smtpd_tls_ask_ccert="yes",
                               smtpd_tls_CApath=str(pki / "capath"),
                               submission__smtpd_tls_ccert_verifydepth="1")
    # the root is found in CApath by its hash; the default depth (9) takes
    # a chain through an intermediate
    assert ccert_trust(cfg, port, pki, "flat") == "Trusted"
    assert ccert_trust(cfg, port, pki, "deep", "deep.chain") == "Trusted"
    # depth 1: the issuer must be the trusted CA itself
    assert ccert_trust(cfg, sub, pki, "flat") == "Trusted"
    assert ccert_trust(cfg, sub, pki, "deep", "deep.chain") == "Untrusted"
    cfg.set("submission.smtpd_tls_ccert_verifydepth", "2")
    harness.run_tern("reload", config_dir=cfg, check=True)
    harness.wait_for(lambda: ccert_trust(cfg, sub, pki, "deep", "deep.chain") == "Trusted",
                     what="depth 2 after reload")


def test_capath_that_does_not_exist_is_an_error(config_dir, pki):
    config_dir.set(smtpd_tls_security_level="may", smtpd_tls_chain_files=str(pki / "rsa.chain"),
                   smtpd_tls_CApath="/nonexistent/capath")
    rc, out, err = harness.run_tern("check", config_dir=config_dir)
    assert rc != 0 and "smtpd_tls_CApath" in out + err, out + err


# --- Dovecot's auth server: mechanisms, LOGIN passed through, one connection -------



class SocketRelay:
    """A unix socket in front of another that counts the connections
    made through it (how many connections ternd opens to Dovecot)."""

    def __init__(self, path, target):
        import threading
        self.target, self.connections = str(target), 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            up = socket.socket(socket.AF_UNIX)
            up.connect(self.target)
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def submission_session(sub, pki):
    s = TlsSmtp(sub)
    assert s.reply().startswith("220 ")
    s.cmd("EHLO client.example")
    s.starttls(pki)
    return s


def b64(text):
    import base64
    return base64.b64encode(text.encode()).decode()


def ehlo_auth(s):
    ehlo = s.cmd("EHLO client.example")
    return [l[4:] for l in ehlo.splitlines() if l[4:].startswith("AUTH ")]


def test_dovecot_mechanisms_are_offered_and_login_passed_through(ternd_tls, pki, tmp_path,
                                                                 start_program):
    sock = start_dovecot(tmp_path, start_program, "login")  # no PLAIN at all
    cfg, _, sub = ternd_tls(passwd=False, **{"submission.smtpd_sasl_type": "dovecot",
                                             "submission.smtpd_sasl_path": str(sock)})
    s = submission_session(sub, pki)
    first = ehlo_auth(s)      # the first EHLO may not know yet
    assert first in (["AUTH PLAIN LOGIN"], ["AUTH LOGIN"]), first
    harness.wait_for(lambda: ehlo_auth(s) == ["AUTH LOGIN"], what="EHLO offering Dovecot's LOGIN")
    assert s.cmd("AUTH PLAIN " + b64("\0alice\0" + PASSWORD)) == \
        "504 5.5.4 Unrecognized authentication type"
    # LOGIN goes to Dovecot as LOGIN: its challenges, our answers
    assert s.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert s.cmd(b64("alice")) == "334 UGFzc3dvcmQ6"
    assert s.cmd(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
    s.cmd("QUIT")
    # with an initial response too
    s = submission_session(sub, pki)
    assert ehlo_auth(s) == ["AUTH LOGIN"]
    assert s.cmd("AUTH LOGIN " + b64("alice")) == "334 UGFzc3dvcmQ6"
    assert s.cmd(b64("wrong")) == "535 5.7.8 Error: authentication failed: authentication failure"
    wait_maillog(cfg, r"warning: unknown\[127\.0\.0\.1\]: SASL LOGIN authentication failed: "
                      r"authentication failure(, sasl_username=alice)?$")


def test_dovecot_one_connection_per_session(ternd_tls, pki, tmp_path, start_program):
    real = start_dovecot(tmp_path, start_program, "plain login")
    relay = SocketRelay(tmp_path / "relay", real)
    cfg, _, sub = ternd_tls(passwd=False, **{"submission.smtpd_sasl_type": "dovecot",
                                             "submission.smtpd_sasl_path":
                                                 str(tmp_path / "relay")})
    s = submission_session(sub, pki)
    ehlo_auth(s)
    # (Dovecot delays logins after a failure from the same address: one)
    assert s.cmd("AUTH PLAIN " + b64("\0alice\0wrong")) == \
        "535 5.7.8 Error: authentication failed: authentication failure"
    assert s.cmd("AUTH PLAIN " + b64("\0alice\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    # the PLAIN exchange without an initial response: Dovecot's empty challenge
    s2 = submission_session(sub, pki)
    ehlo_auth(s2)
    assert s2.cmd("AUTH PLAIN") == "334 "
    assert s2.cmd(b64("\0alice\0" + PASSWORD)) == "235 2.7.0 Authentication successful"
    # a client that gives up: the next AUTH still works
    s3 = submission_session(sub, pki)
    ehlo_auth(s3)
    assert s3.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert s3.cmd("*") == "501 5.7.0 Authentication aborted"
    assert s3.cmd("AUTH PLAIN " + b64("\0alice\0" + PASSWORD)) == \
        "235 2.7.0 Authentication successful"
    # one connection for each of the first two sessions (two logins on
    # the first); the abandoned exchange cost the third a second one
    assert relay.connections == 4, relay.connections
    wait_maillog(cfg, r"sasl_method=PLAIN, sasl_username=alice|"
                      r"SASL PLAIN authentication failed: authentication failure")


def test_dovecot_concurrent_logins_and_vanishing_clients(ternd_tls, pki, tmp_path,
                                                         start_program):
    import threading
    sock = start_dovecot(tmp_path, start_program, "plain login")
    cfg, _, sub = ternd_tls(passwd=False, **{"submission.smtpd_sasl_type": "dovecot",
                                             "submission.smtpd_sasl_path": str(sock)})
    # clients that leave while Dovecot is still answering
    for line in ("AUTH PLAIN " + b64("\0alice\0" + PASSWORD), "AUTH LOGIN"):
        s = submission_session(sub, pki)
        ehlo_auth(s)
        s.send(line + "\r\n")
        s.close()
    results = []

    def login():
        s = submission_session(sub, pki)
        ehlo_auth(s)
        assert s.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert s.cmd(b64("alice")) == "334 UGFzc3dvcmQ6"
        results.append(s.cmd(b64(PASSWORD)))
        s.cmd("QUIT")
    threads = [threading.Thread(target=login) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["235 2.7.0 Authentication successful"] * 8, results
    assert cfg.program.alive, "ternd died"
