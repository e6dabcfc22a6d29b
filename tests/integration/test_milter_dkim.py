"""test_milter_dkim.py - tern-dkim-milter under a real Postfix 3.7.

Keys are made with `tern-dkim-milter genkey` (RSA-2048 and Ed25519) and
published by a dnsmasq on loopback; the milter fetches them through
libtern's resolver. Mail from 127.0.0.1 (internal_hosts) is signed; mail
from an "outside" client (XCLIENT ADDR=...) is verified and gets an
Authentication-Results field. Independent checks: dkimpy verifies what
the milter signs (looking the key up in the same dnsmasq) and signs what
the milter verifies; opendkim-testmsg (libopendkim's own signer, from the
opendkim package) signs one too.
"""

import re
import subprocess
import time

import dkim
import pytest

import harness
from milterworld import milter_world  # noqa: F401  (fixture)

MAILBOXES = {a: "%s/%s/" % (a.split("@")[1], a.split("@")[0]) for a in (
    "alice@example.com", "bob@remote.test", "carol@example.org")}
OUTSIDE = "ADDR=198.51.100.7 NAME=mail.outside.test"
AUTHSERV = "mx.pf.test"          # the Postfix instance's $myhostname = $j


def genkey(tmp_path, selector, domain, kind="rsa"):
    d = tmp_path / "keys"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    p = subprocess.run([harness.tern_bin("tern-dkim-milter"), "genkey", "-d", domain,
                        "-s", selector, "-t", kind, "-D", d],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    priv, txt = p.stdout.split()
    (d / (selector + ".private")).chmod(0o644)       # the milter runs as "tern"
    zone = open(txt).read()
    record = "".join(re.findall(r'"([^"]*)"', zone))
    assert zone.startswith("%s._domainkey\tIN\tTXT\t(" % selector)
    return priv, record


@pytest.fixture
def keys(tmp_path):
    k = {}
    k["rsa"] = genkey(tmp_path, "sel1", "example.com")
    k["ed"] = genkey(tmp_path, "sel2", "example.org", "ed25519")
    k["other"] = genkey(tmp_path, "sel3", "example.com")   # never published
    return k


@pytest.fixture
def zone(keys, dns):
    return dns(txt={"sel1._domainkey.example.com": [keys["rsa"][1]],
                    "sel1._domainkey.mail.example.com": [keys["rsa"][1]],
                    "sel2._domainkey.example.org": [keys["ed"][1]]})


def dnsfunc(server):
    """dkimpy's key lookup, through the test's dnsmasq."""
    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        reply = harness.dns_query(name.rstrip("."), "TXT", server.port)
        vals = reply.values("TXT")
        if not vals:
            return None
        v = vals[0]
        if isinstance(v, (list, tuple)):
            v = b"".join(x if isinstance(x, bytes) else x.encode() for x in v)
        return v if isinstance(v, bytes) else v.encode()
    return lookup


def message(subject, sender="alice@example.com", to="bob@remote.test", body="Hello.\r\n"):
    return ("From: Alice <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000"
            "\r\nMessage-ID: <%s@client.test>\r\n\r\n%s" % (
                sender, to, subject, re.sub(r"\W", ".", subject), body)).encode()


def conf(keys, zone, extra=""):
    return ("user = tern\ndomain = example.com\nselector = sel1\nkey_file = %s\n"
            "dns_servers = %s\ndns_timeout = 3s\n%s" % (keys["rsa"][0], zone.server, extra))


def delivered_raw(w, address, n):
    """The n-th delivered message as bytes, with CRLF line ends and the
    delivery agent's Return-Path/Delivered-To left in (not signed)."""
    raw = w.wait_mail(address, n, raw=True)[n - 1]
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def ar_fields(raw):
    return [m.group(1) for m in re.finditer(rb"(?mi)^Authentication-Results:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)",
                                            raw)]


def first_field(raw):
    """The topmost field the MTA wrote (after the delivery agent's own)."""
    for line in raw.split(b"\r\n"):
        if not re.match(rb"(?i)(Return-Path|X-Original-To|Delivered-To):", line):
            return line
    return b""


def unfold(b):
    return re.sub(rb"\r\n[ \t]+", b" ", b).decode().strip()


def test_sign_rsa_verified_by_dkimpy_and_by_the_milter(milter_world, keys, zone):
    w = milter_world("dkim", conf(keys, zone), MAILBOXES)
    code, text = w.send("alice@example.com", ["bob@remote.test"], message("signed rsa"))
    assert code == 250, (code, text, w.log())
    raw = delivered_raw(w, "bob@remote.test", 1)
    sig = re.search(rb"(?m)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw)
    assert sig, raw
    tags = unfold(sig.group(1))
    for t in ("d=example.com", "s=sel1", "a=rsa-sha256", "c=relaxed/simple"):
        assert t in tags, tags
    # over-signing: From is listed once more than it occurs
    h = re.search(r"(?:^|;) *h=([^;]*)", tags).group(1).replace(" ", "").lower().split(":")
    assert h.count("from") == 2, h
    # Signed mail gets no A-R; the signature is the first field (above
    # Postfix's Received:).
    assert not ar_fields(raw)
    assert first_field(raw).startswith(b"DKIM-Signature:"), raw[:300]
    assert dkim.verify(raw, dnsfunc=dnsfunc(zone)), raw
    assert not dkim.verify(raw.replace(b"Hello.", b"Hello!"), dnsfunc=dnsfunc(zone))
    assert not dkim.verify(raw.replace(b"signed rsa", b"signed RSA"), dnsfunc=dnsfunc(zone))
    assert re.search(r"tern/dkim-milter\[\d+\]: [0-9A-F]+: DKIM-Signature field added "
                     r"\(s=sel1, d=example.com\)", w.log())
    # The same message back in from outside: the milter verifies its own
    # signature.
    code, text = w.send("alice@example.com", ["carol@example.org"], raw, xclient=OUTSIDE)
    assert code == 250, (code, text)
    back = delivered_raw(w, "carol@example.org", 1)
    ars = ar_fields(back)
    assert len(ars) == 1, back[:1500]
    ar = unfold(ars[0])
    assert ar.startswith(AUTHSERV + ";"), ar
    assert re.search(r"dkim=pass \(2048-bit key\) header\.d=example\.com header\.i=@example\.com "
                     r"header\.a=rsa-sha256 header\.s=sel1 header\.b=(\S{8}|\"[^\"]{8}\")$", ar), ar
    # A-R is the topmost field (RFC 8601 §5), above Postfix's Received:.
    assert first_field(back).startswith(b"Authentication-Results:"), back[:300]


def dkimpy_sign(raw, selector, domain, keyfile, canon=(b"relaxed", b"relaxed"), alg=b"rsa-sha256"):
    key = open(keyfile, "rb").read()
    if alg == b"ed25519-sha256":
        # dkimpy takes the raw 32-byte Ed25519 seed, base64
        out = subprocess.run(["openssl", "pkey", "-in", keyfile, "-outform", "DER"],
                             stdout=subprocess.PIPE, check=True).stdout
        import base64
        key = base64.b64encode(out[-32:])
    sig = dkim.sign(raw, selector.encode(), domain.encode(), key, canonicalize=canon,
                    signature_algorithm=alg, include_headers=[b"from", b"to", b"subject",
                                                              b"date", b"message-id"])
    return sig + raw


def test_verify_results_pass_fail_none_permerror_and_multiple(milter_world, keys, zone):
    w = milter_world("dkim", conf(keys, zone), MAILBOXES)
    base = message("verify me")
    cases = [
        ("pass-relaxed", dkimpy_sign(base, "sel1", "example.com", keys["rsa"][0]),
         [r"dkim=pass \(2048-bit key\) header\.d=example\.com header\.i=@example\.com "
          r"header\.a=rsa-sha256 header\.s=sel1 header\.b="]),
        ("pass-simple", dkimpy_sign(base, "sel1", "example.com", keys["rsa"][0],
                                    canon=(b"simple", b"simple")),
         [r"dkim=pass \(2048-bit key\) header\.d=example\.com"]),
        ("body-tampered", dkimpy_sign(base, "sel1", "example.com", keys["rsa"][0])
         .replace(b"Hello.", b"Hello!"),
         [r"dkim=fail reason=\"[^\"]+\" \(2048-bit key\) header\.d=example\.com"]),
        ("header-tampered", dkimpy_sign(base, "sel1", "example.com", keys["rsa"][0])
         .replace(b"Subject: verify me", b"Subject: verify you"),
         [r"dkim=fail reason=\"signature verification failed\" \(2048-bit key\)"]),
        ("unsigned", base, [r"^%s; dkim=none$" % re.escape(AUTHSERV)]),
        ("no-key", dkimpy_sign(base, "sel3", "example.com", keys["other"][0]),
         [r"dkim=permerror reason=\"[^\"]*\" header\.d=example\.com header\.i=@example\.com "
          r"header\.a=rsa-sha256 header\.s=sel3"]),
        ("two-signatures", dkimpy_sign(dkimpy_sign(base, "sel1", "example.com", keys["rsa"][0]),
                                       "sel2", "example.org", keys["ed"][0],
                                       alg=b"ed25519-sha256"),
         [r"dkim=pass \(2048-bit key\) header\.d=example\.com",
          r"dkim=pass (?:\(\d+-bit key\) )?header\.d=example\.org header\.i=@example\.org "
          r"header\.a=ed25519-sha256 header\.s=sel2"]),
        ("opendkim-testmsg", subprocess.run(
            ["opendkim-testmsg", "-C", "-d", "example.com", "-s", "sel1", "-k", keys["rsa"][0]],
            input=base, stdout=subprocess.PIPE, check=True).stdout,
         # opendkim-testmsg signs rsa-sha1
         [r"dkim=pass \(2048-bit key\) header\.d=example\.com header\.i=@example\.com "
          r"header\.a=rsa-sha1 header\.s=sel1"]),
    ]
    for i, (name, raw, patterns) in enumerate(cases, 1):
        code, text = w.send("alice@example.com", ["carol@example.org"], raw, xclient=OUTSIDE)
        assert code == 250, (name, code, text)
        got = delivered_raw(w, "carol@example.org", i)
        ars = ar_fields(got)
        assert len(ars) == 1, (name, got[:2000])
        ar = unfold(ars[0])
        for p in patterns:
            assert re.search(p, ar), (name, p, ar)
        if name == "two-signatures":
            assert ar.count("dkim=") == 2, ar
    log = w.log()
    assert re.search(r": DKIM verification: dkim=fail ", log), log


def test_forged_ar_removed_and_bad_signature_rejected(milter_world, keys, zone):
    w = milter_world("dkim", conf(keys, zone, "on_bad_signature = reject\n"), MAILBOXES)
    signed = dkimpy_sign(message("forged"), "sel1", "example.com", keys["rsa"][0])
    forged = (b"Authentication-Results: " + AUTHSERV.encode() + b"; dkim=pass header.d=evil.test\r\n"
              b"Authentication-Results: other.example; spf=pass smtp.mailfrom=x.test\r\n"
              b"Authentication-Results: (comment) " + AUTHSERV.encode().upper() +
              b";\r\n\tdkim=pass header.d=evil2.test\r\n") + signed
    code, text = w.send("alice@example.com", ["carol@example.org"], forged, xclient=OUTSIDE)
    assert code == 250, (code, text)
    got = delivered_raw(w, "carol@example.org", 1)
    ars = [unfold(a) for a in ar_fields(got)]
    assert len(ars) == 2, ars
    assert ars[0].startswith(AUTHSERV + ";") and "dkim=pass (2048-bit key)" in ars[0], ars
    assert ars[1].startswith("other.example;"), ars
    assert b"evil" not in got
    # on_bad_signature = reject
    bad = signed.replace(b"Hello.", b"Hello!")
    code, text = w.send("alice@example.com", ["carol@example.org"], bad, xclient=OUTSIDE)
    assert code == 550 and "5.7.20" in text, (code, text)


def test_dns_failure_tempfails(milter_world, keys, tmp_path):
    class Dead:
        server = "127.0.0.1@%d" % harness.free_port()    # nobody answers there
    w = milter_world("dkim", conf(keys, Dead, "dns_timeout = 1s\n"), MAILBOXES)
    signed = dkimpy_sign(message("no dns"), "sel1", "example.com", keys["rsa"][0])
    code, text = w.send("alice@example.com", ["carol@example.org"], signed, xclient=OUTSIDE)
    assert code == 451 and "4.7.5" in text, (code, text, w.log())
    assert "temporary DNS failure" in w.log()


def test_key_table_signing_table_ed25519(milter_world, keys, zone, tmp_path):
    kt = tmp_path / "key_table"
    kt.write_text("edkey example.org:sel2:%s\nrsakey %%:sel1:%s\n" % (keys["ed"][0],
                                                                     keys["rsa"][0]))
    st = tmp_path / "signing_table"
    st.write_text("*@example.org edkey\n*@*.example.com rsakey\n")
    for p in (kt, st):
        p.chmod(0o644)
    w = milter_world("dkim", "user = tern\nkey_table = texthash:%s\nsigning_table = refile:%s\n"
                     "dns_servers = %s\ncanonicalization = simple/simple\n"
                     % (kt, st, zone.server), MAILBOXES)
    code, _ = w.send("carol@example.org", ["bob@remote.test"],
                     message("ed signed", sender="carol@example.org"))
    assert code == 250
    raw = delivered_raw(w, "bob@remote.test", 1)
    tags = unfold(re.search(rb"(?m)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw).group(1))
    assert "a=ed25519-sha256" in tags and "d=example.org" in tags and "s=sel2" in tags, tags
    assert "c=simple/simple" in tags, tags
    assert dkim.verify(raw, dnsfunc=dnsfunc(zone)), raw
    # "%" in key_table: the From: domain (a subdomain here)
    code, _ = w.send("carol@example.org", ["bob@remote.test"],
                     message("sub", sender="x@mail.example.com"))
    assert code == 250
    raw = delivered_raw(w, "bob@remote.test", 2)
    tags = unfold(re.search(rb"(?m)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", raw).group(1))
    assert "d=mail.example.com" in tags and "s=sel1" in tags, tags
    assert "a=rsa-sha256" in tags and "c=simple/simple" in tags, tags
    assert dkim.verify(raw, dnsfunc=dnsfunc(zone)), raw
    assert not dkim.verify(raw.replace(b"Subject: sub", b"Subject:  sub"), dnsfunc=dnsfunc(zone))
    # No entry: not signed.
    code, _ = w.send("carol@example.org", ["bob@remote.test"],
                     message("unsigned", sender="x@elsewhere.test"))
    assert code == 250
    raw = delivered_raw(w, "bob@remote.test", 3)
    assert b"DKIM-Signature" not in raw
    assert "no signing key for <x@elsewhere.test>: not signed" in w.log()


def test_verify_mail_signed_by_the_opendkim_daemon(milter_world, keys, zone, start_program,
                                                   tmp_path):
    """Real opendkim (the milter daemon, driven over the milter protocol)
    signs; Postfix + tern-dkim-milter verify."""
    from milterclient import MilterClient
    port = harness.free_port()
    oconf = tmp_path / "opendkim.conf"
    oconf.write_text("Mode s\nDomain example.com\nSelector sel1\nKeyFile %s\n"
                     "Socket inet:%d@127.0.0.1\nInternalHosts 127.0.0.1\n"
                     "Canonicalization relaxed/relaxed\nRequireSafeKeys false\n"
                     "Background false\nSyslog false\n" % (keys["rsa"][0], port))
    start_program(["/usr/sbin/opendkim", "-f", "-x", oconf], ready=port, name="opendkim")
    hdrs = [("From", "Alice <alice@example.com>"), ("To", "carol@example.org"),
            ("Subject", "signed by opendkim"), ("Date", "Sat, 21 Nov 2026 09:00:00 +0000"),
            ("Message-ID", "<odkim@client.test>")]
    body = b"Hello from opendkim.\r\n"
    c = MilterClient(port)
    c.connect(addr="127.0.0.1", **{"{client_addr}": "127.0.0.1", "j": "signer.test"})
    c.helo()
    mods, final = c.message("alice@example.com", ["carol@example.org"], hdrs, body)
    c.close()
    sig = [m[1][4:].split(b"\0")[1] for m in mods if m[0] == b"i" and b"DKIM-Signature" in m[1]]
    assert sig, mods
    raw = (b"DKIM-Signature:" + sig[0].replace(b"\n", b"\r\n") + b"\r\n" +
           b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in hdrs) + b"\r\n" + body)
    assert dkim.verify(raw, dnsfunc=dnsfunc(zone)), raw
    w = milter_world("dkim", conf(keys, zone), MAILBOXES)
    code, text = w.send("alice@example.com", ["carol@example.org"], raw, xclient=OUTSIDE)
    assert code == 250, (code, text)
    ar = unfold(ar_fields(delivered_raw(w, "carol@example.org", 1))[0])
    assert re.search(r"dkim=pass \(2048-bit key\) header\.d=example\.com header\.i=@example\.com "
                     r"header\.a=rsa-sha256 header\.s=sel1", ar), ar
