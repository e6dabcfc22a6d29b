"""test_outbound_tls.py - TLS and SMTP AUTH in ternd's SMTP client, against
fake servers (fakesmtp.FakeSMTP with an ssl context) and a real Postfix.

A test CA and server certificates are made with the openssl command line
for each test session: one for mx1.remote.test (and 127.0.0.2), one for a
wrong name. Covers the levels of smtp_tls_security_level (may by default:
STARTTLS when offered, plaintext when not or refused; encrypt, verify,
secure), the "Untrusted/Trusted/Verified TLS connection established"
log line, smtp_tls_policy_maps per destination, the client side of the
STARTTLS injection battery (bytes after the 220 -> the session is dropped,
nothing is sent), EHLO again after TLS, connection reuse over TLS, and
AUTH PLAIN/LOGIN from smtp_sasl_password_maps: only over TLS by default,
failures deferred (smtp_sasl_auth_soft_bounce); close_notify after QUIT,
the SNI sent (smtp_tls_servername, servername= in the policy table),
smtp_tls_CApath and smtp_tls_scert_verifydepth.
"""

import re
import ssl
import subprocess

import pytest

import harness
from pfinstance import PostfixInstance
from test_outbound import MX1, delivery_re, hostport, outbound  # noqa: F401

MX1_NAME = "mx1.remote.test"


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and two server certificates (good name, wrong name), readable
    by mail_owner."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=Tern Test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, san in (("good", "DNS:%s,IP:127.0.0.2" % MX1_NAME),
                      ("wrong", "DNS:other.example")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name,
                 "-keyout", "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
        (d / ("%s.ext" % name)).write_text("subjectAltName=%s\n" % san)
        _openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "%s.ext" % name,
                 "-out", "%s.pem" % name, cwd=d)
    for p in d.iterdir():
        p.chmod(0o644)
    harness.traversable(d)
    return d


def server_ctx(pki, name="good"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / ("%s.pem" % name)), str(pki / ("%s.key" % name)))
    return ctx


def tls_line(trust, port):
    return re.compile(r"tern/smtp\[\d+\]: %s TLS connection established to "
                      r"mx1\.remote\.test\[127\.0\.0\.2\]:%d: TLSv1\.[23] with cipher \S+ "
                      r"\(\d+/\d+ bits\)" % (trust, port))


def ehlos(conn):
    return [c for c in conn["commands"] if c.upper().startswith("EHLO")]


def test_opportunistic_tls_by_default(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki))
    outbound.start(smtp_tls_loglevel="1")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    conn = mx1.connections[0]
    assert conn["tls"] is not None, mx1.describe()
    assert len(ehlos(conn)) == 2, "EHLO again after the handshake:\n" + mx1.describe()
    outbound.wait_log(tls_line("Untrusted", outbound.port).pattern)


def test_may_without_starttls_or_refused_goes_on_in_plaintext(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki),
                        starttls_reply="454 4.7.0 TLS not available due to local problem")
    outbound.start()
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    assert mx1.connections[0]["tls"] is None
    assert "TLS connection established" not in outbound.log()


def test_verify_level_with_ca_and_matching_name(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki))
    outbound.start(smtp_tls_security_level="verify", smtp_tls_CAfile=str(pki / "ca.pem"),
                   smtp_tls_loglevel="1")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.wait_log(tls_line("Verified", outbound.port).pattern)


def test_may_with_ca_is_trusted_not_verified(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki, "wrong"))
    outbound.start(smtp_tls_CAfile=str(pki / "ca.pem"), smtp_tls_loglevel="1")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.wait_log(tls_line("Trusted", outbound.port).pattern)


def test_verify_level_refuses_a_wrong_name(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki, "wrong"))
    outbound.start(smtp_tls_security_level="verify", smtp_tls_CAfile=str(pki / "ca.pem"))
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.5", "deferred",
        "Server certificate not verified",
        service="smtp"))
    assert mx1.delivered() == []
    assert not any("MAIL" in c.upper() for conn in mx1.connections for c in conn["commands"])


def test_verify_level_refuses_an_unknown_ca(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki))
    outbound.start(smtp_tls_security_level="verify")        # no CAfile: nothing is trusted
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.5", "deferred",
        "Server certificate not trusted",
        service="smtp"))
    assert mx1.delivered() == []


def test_encrypt_without_starttls_defers(outbound):
    mx1 = outbound.fake(MX1)                                 # no STARTTLS offered
    outbound.start(smtp_tls_security_level="encrypt")
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.4", "deferred",
        re.escape("TLS is required, but was not offered by host "
                  "mx1.remote.test[127.0.0.2]"), service="smtp"))
    assert mx1.delivered() == []


def test_policy_map_requires_tls_for_one_destination(outbound, pki):
    mx1 = outbound.fake(MX1)                                 # remote.test: no STARTTLS
    other_port = harness.free_port()
    mx2 = outbound.fake("127.0.0.3", port=other_port, tls=server_ctx(pki))
    policy = outbound.cfg.write_table("tls_policy", "remote.test:%d encrypt\n" % outbound.port)
    outbound.start(transport={"remote.test": "smtp:remote.test:%d" % outbound.port,
                              "plain.test": "smtp:[127.0.0.3]:%d" % other_port},
                   smtp_tls_security_level="none",
                   smtp_tls_policy_maps="texthash:%s" % policy)
    outbound.send(["u@remote.test"])
    outbound.send(["p@plain.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.4", "deferred",
        "TLS is required, but was not offered by host.*", service="smtp"))
    outbound.wait_fake(mx2, 1)
    assert mx2.connections[0]["tls"] is None, "level none for plain.test: no STARTTLS"
    assert mx1.delivered() == []


def test_starttls_response_injection_is_detected(outbound, pki):
    # A man in the middle answers the EHLO-after-TLS in advance, in
    # plaintext, right behind the 220.
    mx1 = outbound.fake(MX1, tls=server_ctx(pki),
                        starttls_inject="250-mx1.remote.test\r\n250 PIPELINING\r\n")
    outbound.start()
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.5", "deferred",
        re.escape("host mx1.remote.test[127.0.0.2] sent data after its reply to STARTTLS "
                  "(STARTTLS response injection?)"), service="smtp"))
    assert mx1.delivered() == []
    assert all(conn["tls"] is None for conn in mx1.connections), mx1.describe()
    assert not any("MAIL" in c.upper() for conn in mx1.connections for c in conn["commands"])


def test_connection_reuse_keeps_tls(outbound, pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki))
    outbound.start()
    for i in range(3):
        outbound.send(["u%d@remote.test" % i])
        outbound.wait_fake(mx1, i + 1)
    assert len(mx1.connections) == 1, mx1.describe()
    assert len(mx1.connections[0]["transactions"]) == 3
    assert mx1.connections[0]["tls"] is not None
    relay = hostport(MX1_NAME, MX1, outbound.port)
    assert re.search(r"to=<u2@remote\.test>, relay=%s, conn_use=3, " % relay, outbound.log())


# --- AUTH ----------------------------------------------------------------------

def auth_world(outbound, pki, tls=True, password="s3cret", mechanisms="PLAIN LOGIN",
               **settings):
    mx1 = outbound.fake(MX1, tls=server_ctx(pki) if tls else None,
                        auth={"joe": "s3cret"}, auth_mechanisms=mechanisms)
    nexthop = "[127.0.0.2]:%d" % outbound.port
    secrets = outbound.cfg.write_table("sasl_passwd", "%s joe:%s\n" % (nexthop, password))
    secrets.chmod(0o640)
    harness.give_to_mail_owner(secrets)         # secret: mail_owner's alone
    outbound.start(transport={"remote.test": "smtp:" + nexthop},
                   smtp_sasl_auth_enable="yes",
                   smtp_sasl_password_maps="texthash:%s" % secrets,
                   **settings)
    return mx1


def test_auth_over_tls(outbound, pki):
    mx1 = auth_world(outbound, pki)
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    conn = mx1.connections[0]
    assert conn["tls"] is not None and conn["auth"] == "joe", mx1.describe()
    cmds = [c.split()[0].upper() for c in conn["commands"]]
    assert cmds.index("STARTTLS") < cmds.index("AUTH") < cmds.index("MAIL"), cmds
    assert "s3cret" not in outbound.log()


def test_auth_login_when_plain_is_not_offered(outbound, pki):
    mx1 = auth_world(outbound, pki, mechanisms="LOGIN")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    conn = mx1.connections[0]
    assert conn["auth"] == "joe", mx1.describe()
    assert any(c.upper() == "AUTH LOGIN" for c in conn["commands"]), mx1.describe()


def test_no_plaintext_auth_without_tls(outbound, pki):
    mx1 = auth_world(outbound, pki, tls=False)
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("127.0.0.2", MX1, outbound.port), r"4\.7\.0", "deferred",
        re.escape("SASL authentication failed: cannot authenticate to server "
                  "127.0.0.2[127.0.0.2]: no mechanism available"), service="smtp"))
    assert mx1.delivered() == []
    assert not any(c.upper().startswith("AUTH") for conn in mx1.connections
                   for c in conn["commands"])


def test_failed_auth_is_deferred(outbound, pki):
    mx1 = auth_world(outbound, pki, password="wrong")
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("127.0.0.2", MX1, outbound.port), r"4\.7\.8", "deferred",
        re.escape("SASL authentication failed; server 127.0.0.2[127.0.0.2] said: "
                  "535 5.7.8 Error: authentication failed: bad credentials"), service="smtp"))
    assert mx1.delivered() == []


# --- a real Postfix as the TLS server --------------------------------------------

def test_relay_to_postfix_over_tls(outbound, pki, tmp_path):
    """ternd relays to a private Postfix that offers STARTTLS with the test
    certificate: ternd verifies it (CA and name), Postfix logs the session."""
    pf = PostfixInstance(tmp_path / "postfix", harness.free_port(),
                         mailboxes={"someone@pf.test": "pf.test/someone/"},
                         main={"smtpd_tls_security_level": "may",
                               "smtpd_tls_cert_file": str(pki / "good.pem"),
                               "smtpd_tls_key_file": str(pki / "good.key"),
                               "smtpd_tls_loglevel": "1"})
    pf.start()
    try:
        outbound.start(transport={"pf.test": "smtp:[127.0.0.1]:%d" % pf.port},
                       smtp_tls_security_level="verify",
                       smtp_tls_CAfile=str(pki / "ca.pem"),
                       smtp_tls_verify_cert_match=MX1_NAME, smtp_tls_loglevel="1")
        outbound.send(["someone@pf.test"])
        outbound.wait_log(r"tern/smtp\[\d+\]: Verified TLS connection established to "
                          r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.3" % pf.port)
        outbound.wait_log(r"to=<someone@pf\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]"
                          r":%d, .*status=sent" % pf.port)
        pf.wait_log(r"TLS connection established from", timeout=10)
    finally:
        pf.stop()


def test_tls_log_line_only_from_loglevel_1_and_starttls_offer_noted(outbound, pki):
    """Postfix's defaults: smtp_tls_loglevel 0 logs no TLS line; with
    TLS off, smtp_tls_note_starttls_offer logs the servers that offer it."""
    mx1 = outbound.fake(MX1, tls=server_ctx(pki))
    other_port = harness.free_port()
    mx2 = outbound.fake("127.0.0.3", port=other_port, tls=server_ctx(pki))
    policy = outbound.cfg.write_table("tls_policy", "[127.0.0.3]:%d none\n" % other_port)
    outbound.start(transport={"remote.test": "smtp:remote.test:%d" % outbound.port,
                              "noted.test": "smtp:[127.0.0.3]:%d" % other_port},
                   smtp_tls_policy_maps="texthash:%s" % policy,
                   smtp_tls_note_starttls_offer="yes")
    outbound.send(["u@remote.test"])
    outbound.send(["n@noted.test"])
    outbound.wait_fake(mx1, 1)
    outbound.wait_fake(mx2, 1)
    assert mx1.connections[0]["tls"] is not None and mx2.connections[0]["tls"] is None
    outbound.wait_log(r"tern/smtp\[\d+\]: Host offered STARTTLS: \[127\.0\.0\.3\]")
    assert "TLS connection established" not in outbound.log()


# --- close_notify, SNI, CApath, verify depth ------------------------------------

def _quit_then_unwrap(monkeypatch):
    """Make the fake servers answer QUIT, then end TLS with unwrap():
    conn["close_notify"] records whether the client sent its close_notify
    (True) or just closed the socket (the error text)."""
    import fakesmtp

    def cmd_quit(self, arg):
        self.abort_txn()
        self.send("221 2.0.0 Bye", "QUIT")
        if self.rec["tls"] is not None:
            try:
                self.conn.unwrap()
                self.rec["close_notify"] = True
            except (OSError, ValueError) as e:
                self.rec["close_notify"] = str(e)
        return "quit"
    monkeypatch.setattr(fakesmtp._Session, "cmd_QUIT", cmd_quit)


def test_quit_ends_tls_with_close_notify(outbound, pki, monkeypatch):
    _quit_then_unwrap(monkeypatch)
    ctx = server_ctx(pki)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # no close_notify: an error
    mx1 = outbound.fake(MX1, tls=ctx)
    outbound.start(smtp_connection_cache_on_demand="no")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.wait(lambda: "close_notify" in mx1.connections[0], "the QUIT at the fake")
    assert mx1.connections[0]["close_notify"] is True, mx1.describe()


def _sni_recorder(pki, name="good"):
    """A server context that records the SNI of each handshake."""
    ctx = server_ctx(pki, name)
    seen = []
    ctx.sni_callback = lambda sock, sni, c: seen.append(sni)
    return ctx, seen


@pytest.mark.parametrize("setting, policy, want", [
    ("", None, None),                             # Postfix: no SNI unless asked
    ("hostname", None, MX1_NAME),
    ("nexthop", None, "remote.test"),
    ("", "may servername=sni.remote.test", "sni.remote.test"),
    ("hostname", "may servername=nexthop", "remote.test"),
])
def test_smtp_tls_servername(outbound, pki, setting, policy, want):
    ctx, seen = _sni_recorder(pki)
    mx1 = outbound.fake(MX1, tls=ctx)
    settings = {"smtp_tls_servername": setting}
    if policy:
        table = outbound.cfg.write_table("tls_policy", "remote.test:%d %s\n"
                                         % (outbound.port, policy))
        settings["smtp_tls_policy_maps"] = "texthash:%s" % table
    outbound.start(**settings)
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    assert seen == [want], seen


def test_bad_smtp_tls_servername_refuses_start(config_dir):
    config_dir.set(smtp_tls_servername="not a name")
    r = subprocess.run([str(harness.tern_bin("ternd")), "-f", "-c", str(config_dir.path)],
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0 and 'smtp_tls_servername: "not a name" is not a DNS name' in out, out


@pytest.fixture(scope="module")
def deep_pki(pki):
    """mx1's certificate issued by an intermediate CA (deep.pem: leaf then
    intermediate), and a CApath directory with the root, rehashed."""
    d = pki
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Tern Test Intermediate",
             "-keyout", "int.key", "-out", "int.csr", cwd=d)
    (d / "int.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                               "keyUsage=critical,keyCertSign,cRLSign\n")
    _openssl("x509", "-req", "-in", "int.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "int.ext", "-out", "int.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=deep",
             "-keyout", "deep.key", "-out", "deep.csr", cwd=d)
    (d / "deep.ext").write_text("subjectAltName=DNS:%s\n" % MX1_NAME)
    _openssl("x509", "-req", "-in", "deep.csr", "-CA", "int.pem", "-CAkey", "int.key",
             "-CAcreateserial", "-days", "2", "-extfile", "deep.ext", "-out", "deep.leaf",
             cwd=d)
    (d / "deep.pem").write_text((d / "deep.leaf").read_text() + (d / "int.pem").read_text())
    capath = d / "capath"
    capath.mkdir(exist_ok=True)
    (capath / "root.pem").write_text((d / "ca.pem").read_text())
    _openssl("rehash", str(capath), cwd=d)
    for p in list(d.iterdir()) + list(capath.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    harness.traversable(capath)
    return d


def test_capath_verifies(outbound, deep_pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(deep_pki, "deep"))
    outbound.start(smtp_tls_security_level="verify", smtp_tls_CApath=str(deep_pki / "capath"),
                   smtp_tls_loglevel="1")
    outbound.send(["u@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.wait_log(tls_line("Verified", outbound.port).pattern)


def test_scert_verifydepth_limits_the_chain(outbound, deep_pki):
    mx1 = outbound.fake(MX1, tls=server_ctx(deep_pki, "deep"))
    outbound.start(smtp_tls_security_level="verify", smtp_tls_CAfile=str(deep_pki / "ca.pem"),
                   smtp_tls_scert_verifydepth="1")
    outbound.send(["u@remote.test"])
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport(MX1_NAME, MX1, outbound.port), r"4\.7\.5", "deferred",
        "Server certificate not trusted", service="smtp"))
    assert mx1.delivered() == []
