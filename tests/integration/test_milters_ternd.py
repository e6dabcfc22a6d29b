"""test_milters_ternd.py - Tern's four milters under ternd and under a
private Postfix 3.7: the same messages to both, the same results.

One Postfix and one ternd for the module (milters_mta.py), each with one
listener per milter (`smtpd_milters` per listener), both relaying
everything to a FakeSMTP sink of their own, both with SMTP AUTH through
one Dovecot auth server. Each milter runs once and serves both MTAs.
Postfix is the reference. For every message the comparison covers:

- the SMTP replies to MAIL, each RCPT and DATA (or BDAT), code and text;
- what reached the sink: the sender, every recipient with its ESMTP
  parameters (NOTIFY=NEVER of added recipients), the header fields in
  order with only the Received: values blanked, and the body;
- the hold queue (sender and recipients of each held message);
- the milter's own log: every line must come once per MTA (queue IDs
  aside), so the milter saw the same client, HELO, macros and content.

Per milter:
- dkim: signing (loopback clients are internal_hosts; an authenticated
  outside client with sign_authenticated), both copies verified by dkimpy;
  verifying (XCLIENT from outside) a dkimpy signature that passes, one
  that fails, one without a key, an unsigned message, and a forged
  Authentication-Results claiming our authserv-id;
- spf: dnsmasq TXT records for pass, fail, softfail, neutral, none,
  permerror, temperror (a dead forwarder), a failing HELO, the null
  sender, all from an XCLIENT address; loopback and authenticated clients
  are not checked;
- rules: test_milter_rules.py's two corpora and cases (REJECT, DISCARD,
  HOLD, PREPEND, REPLACE, IGNORE, STRIP, REDIRECT, BCC, PASS, WARN, if/endif,
  MIME and nested headers, body lines, body_checks_size_limit,
  line_length_limit), some again over BDAT, and REDIRECT/BCC with two
  recipients;
- archive: seed 002's "archive when the sender or a recipient is outside
  example.com" for every combination of senders (null sender included)
  and recipients, plus the client and SASL maps.

Outside the milters (test_orcpt_made_up_like_postfix): both smtp clients
make up ORCPT=rfc822;<original recipient> when the sink offers DSN; the
comparisons above leave out exactly that ORCPT, this test compares it.
"""

import collections
import re
import subprocess

import dkim
import pytest

import harness
from milters_mta import HOSTNAME, World, wait_idle
from test_milter_dkim import dnsfunc
from test_milter_rules import CASES as RULES_CASES
from test_milter_rules import CORPORA as RULES_CORPORA
from test_milter_rules import REGEXP_CASES
from test_milter_spf import SPF_TXT
from test_smtpd_tls import PASSWORD, start_dovecot

OUTSIDE = "ADDR=198.51.100.7 NAME=mail.outside.test"
SPF_CLIENT = "ADDR=192.0.2.10 NAME=mail.client.test"
DATE = "Sat, 21 Nov 2026 09:00:00 +0000"
AUTH = ("alice", PASSWORD)          # a Dovecot passwd-file user


# -- the module's world --------------------------------------------------------


class Programs:
    """start_program for a module-scoped fixture: every program is stopped
    at the end, and one that did not stop cleanly fails the module."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []

    def start(self, argv, ready=None, name=None, timeout=15.0):
        prog = harness.start_program(argv, self.logdir, ready=ready, name=name, timeout=timeout)
        self.started.append(prog)
        return prog

    def stop(self):
        bad = []
        for prog in reversed(self.started):
            prog.stop()
            if not prog.stopped_cleanly():
                bad.append("%s: %s%s\n%s" % (prog.name, prog.status,
                                             ", needed SIGKILL" if prog.killed else "",
                                             prog.output()[-2000:]))
        return bad


def genkey(d, selector, domain):
    p = subprocess.run([harness.tern_bin("tern-dkim-milter"), "genkey", "-d", domain,
                        "-s", selector, "-D", d], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, check=True)
    priv, txt = p.stdout.split()
    (d / (selector + ".private")).chmod(0o644)       # the milter runs as "tern"
    return priv, "".join(re.findall(r'"([^"]*)"', open(txt).read()))


ARCHIVE = "archive@example.com"
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("milters-ternd")
    harness.traversable(base)
    progs = Programs(base / "logs")
    w = World(base / "mta", progs.start)
    try:
        keys = base / "keys"
        keys.mkdir()
        keys.chmod(0o755)
        w.key_rsa, record = genkey(keys, "sel1", "example.com")
        dead = harness.free_port()      # nobody answers: DNS errors for temp.test
        txt = dict(SPF_TXT)
        txt["sel1._domainkey.example.com"] = [record]
        dns = harness.start_dns(progs.start, txt=txt,
                                extra=["--server=/temp.test/127.0.0.1#%d" % dead])
        w.dns = dns
        (base / "archive-check").write_text("!/@example\\.com$/ %s\n" % ARCHIVE)
        # name -> (program, configuration); rules and rulesre are
        # test_milter_rules.py's two corpora (its files and parameters)
        confs = {
            "dkim": ("dkim", "domain = example.com\nselector = sel1\nkey_file = %s\n"
                     "dns_servers = %s\ndns_timeout = 2s\nsign_authenticated = yes\n"
                     % (w.key_rsa, dns.server)),
            "spf": ("spf", "dns_servers = %s\ndns_timeout = 2s\n"
                    "spf_header = received-spf, authentication-results\n" % dns.server),
            "archive": ("archive", "archive_sender_maps = pcre:%s/archive-check\n"
                        "archive_recipient_maps = pcre:%s/archive-check\n"
                        "archive_client_maps = cidr:{ {192.0.2.0/24 client-copy@example.com} }\n"
                        "archive_sasl_maps = inline:{ alice=sasl-copy@example.com }\n"
                        "archive_header = X-Tern-Archived\n" % (base, base)),
        }
        for name, corpus in (("rules", "pcre"), ("rulesre", "regexp")):
            files, params = RULES_CORPORA[corpus]
            d = base / name
            d.mkdir()
            for fname, text in files.items():
                (d / fname).write_text(text)
            confs[name] = ("rules", "".join("%s = %s\n" % (k, v.replace("@D", str(d)))
                                            for k, v in params.items()))
        harness.traversable(base)
        endpoints = {}
        for name, (program, text) in confs.items():
            port = harness.free_port()
            conf = base / ("%s-milter.conf" % name)
            conf.write_text("user = tern\nsocket = inet:%d@127.0.0.1\n%s" % (port, text))
            conf.chmod(0o644)
            progs.start([harness.tern_bin("tern-%s-milter" % program), "-f", "-c", conf],
                        ready=port, name="tern-%s-milter" % name)
            endpoints[name] = "inet:127.0.0.1:%d" % port
        w.milters = {p.name: p for p in progs.started}
        # SMTP AUTH for both MTAs through one Dovecot auth server
        sasl = start_dovecot(base, progs.start, "plain login")
        w.start_mtas(endpoints, extra={"smtpd_sasl_auth_enable": "yes",
                                       "smtpd_tls_auth_only": "no",
                                       "smtpd_sasl_type": "dovecot",
                                       "smtpd_sasl_path": str(sasl)})
        yield w
    finally:
        w.stop()
        bad = progs.stop()
    assert not bad, "programs did not stop cleanly:\n" + "\n".join(bad)


def message(token, subject=None, sender="someone@example.com", to="user@example.com",
            headers=(), body="Hello.\r\n"):
    h = ["From: Sender <%s>" % sender, "To: %s" % to, "Subject: %s" % (subject or token),
         "Date: %s" % DATE, "Message-ID: <%s@client.test>" % token]
    return ("\r\n".join(h + list(headers)) + "\r\n\r\n" + body).encode()


def run_cases(w, milter_name, cases):
    """Send every case to both MTAs, wait until both queues are idle, and
    return {token: {side: outcome}} with the outcomes compared by the
    caller. A case: (token, sender, rcpts, raw message, send options)."""
    replies = {}
    held_before = {s.name: s.held() for s in w.sides}
    milter = w.milters["tern-%s-milter" % milter_name]
    log_start = len(milter.output())
    for token, sender, rcpts, raw, opts in cases:
        for side in w.sides:
            replies.setdefault(token, {})[side.name] = side.send(milter_name, sender, rcpts,
                                                                 raw, **opts)
    wait_idle(w.sides)
    unpaired_log_lines(milter.output()[log_start:])
    out = {}
    for token, *_ in cases:
        out[token] = {s.name: {"replies": replies[token][s.name],
                               "delivered": s.delivered(token)} for s in w.sides}
    held = {s.name: [h for h in s.held() if h not in held_before[s.name]] for s in w.sides}
    return out, held


QUEUE_ID = re.compile(r"\b[0-9A-F]{10,16}\b")


def unpaired_log_lines(text):
    """Each case went to both MTAs, so every line the milter logged must
    come twice once queue IDs and PIDs are blanked: a line only one MTA
    caused means the milter saw something different (a macro, the client
    name, the HELO name...)."""
    lines = [QUEUE_ID.sub("QID", re.sub(r"^\S+\[\d+\]: ", "", ln))
             for ln in text.splitlines() if ln.strip()]
    odd = sorted(ln for ln, n in collections.Counter(lines).items() if n % 2)
    assert not odd, "milter log lines not logged for both MTAs:\n" + "\n".join(odd)


def assert_same(w, milter, out):
    for token, sides in out.items():
        pf, tern = sides["postfix"], sides["ternd"]
        assert tern["replies"] == pf["replies"], (token, "replies", pf["replies"],
                                                  tern["replies"], w.ternd.log())
        assert tern["delivered"] == pf["delivered"], _diff(token, pf["delivered"],
                                                           tern["delivered"],
                                                           w.milters["tern-%s-milter" % milter])


def _diff(token, want, got, milter):
    lines = ["%s: delivered differently" % token, "postfix:"]
    for d in want:
        lines += ["  %r %r" % (d[0], d[1])] + ["    " + f for f in d[2]] + ["  body %r" % d[3]]
    lines.append("ternd:")
    for d in got:
        lines += ["  %r %r" % (d[0], d[1])] + ["    " + f for f in d[2]] + ["  body %r" % d[3]]
    lines.append("milter log:\n" + milter.output()[-2000:])
    return "\n".join(lines)


# -- DKIM ------------------------------------------------------------------------


def without_sig_times(fields):
    """The DKIM-Signature the milter added (above the MTA's Received:)
    with its t= (signing time) and b= (which covers t=) values blanked:
    they differ when the two MTAs' copies are signed in different seconds.
    Both signatures are verified by dkimpy instead; every other byte of
    the field, folding included, must be the same. Signatures that came
    with the message are left alone."""
    out, above = [], True
    for f in fields:
        if f.startswith("Received:"):
            above = False
        if above and f.startswith("DKIM-Signature:"):
            f = re.sub(r"(;\s*t=)\d+", r"\1T", f)
            f = re.sub(r"(;\s*b=)[A-Za-z0-9+/=\s]+", r"\1B", f)
        out.append(f)
    return out


def test_dkim(world):
    w = world
    key = open(w.key_rsa, "rb").read()
    lookup = dnsfunc(w.dns)

    def signed(token, **kw):
        raw = message(token, sender="alice@example.com", to="bob@remote.test", **kw)
        return dkim.sign(raw, b"sel1", b"example.com", key,
                         canonicalize=(b"relaxed", b"simple"),
                         include_headers=[b"from", b"to", b"subject", b"date"]) + raw

    def nokey(token):
        raw = message(token, sender="alice@example.com", to="bob@remote.test")
        return dkim.sign(raw, b"nosuch", b"example.com", key,
                         include_headers=[b"from", b"subject"]) + raw

    bad = signed("dkim-verify-fail").replace(b"Hello.", b"Hello, forged.")
    foreign = (b"Authentication-Results: " + HOSTNAME.encode()
               + b"; dkim=pass header.d=evil.test\r\n"
               + b"Authentication-Results: other.example; dkim=none\r\n"
               + message("dkim-foreign-ar", sender="alice@example.com"))
    cases = [
        ("dkim-sign", "alice@example.com", ["bob@remote.test"],
         message("dkim-sign", sender="alice@example.com", to="bob@remote.test",
                 body="Hello, signed world.\r\nSecond line.\r\n"), {}),
        ("dkim-sign-nokey-domain", "carol@example.org", ["bob@remote.test"],
         message("dkim-sign-nokey-domain", sender="carol@example.org"), {}),
        ("dkim-verify-pass", "alice@example.com", ["bob@remote.test"],
         signed("dkim-verify-pass"), {"xclient": OUTSIDE}),
        ("dkim-verify-fail", "alice@example.com", ["bob@remote.test"], bad,
         {"xclient": OUTSIDE}),
        ("dkim-verify-nokey", "alice@example.com", ["bob@remote.test"],
         nokey("dkim-verify-nokey"), {"xclient": OUTSIDE}),
        ("dkim-verify-unsigned", "alice@example.com", ["bob@remote.test"],
         message("dkim-verify-unsigned"), {"xclient": OUTSIDE}),
        ("dkim-foreign-ar", "alice@example.com", ["bob@remote.test"], foreign,
         {"xclient": OUTSIDE}),
        # from outside but authenticated (sign_authenticated = yes): signed
        ("dkim-sign-auth", "alice@example.com", ["bob@remote.test"],
         message("dkim-sign-auth", sender="alice@example.com"), {"xclient": OUTSIDE, "auth": AUTH}),
    ]
    out, held = run_cases(w, "dkim", cases)
    assert held["postfix"] == held["ternd"] == []
    for side in w.sides:
        for token in ("dkim-sign", "dkim-sign-auth"):
            raws = side.raw_delivered(token)
            assert len(raws) == 1, (side.name, token, raws)
            assert raws[0].startswith(b"DKIM-Signature:"), (side.name, token, raws[0])
            assert dkim.verify(raws[0], dnsfunc=lookup), (side.name, token, raws[0].decode())
            assert not dkim.verify(raws[0].replace(b"Hello", b"Jello"), dnsfunc=lookup)
    for token, sides in out.items():
        for s in sides.values():
            s["delivered"] = [(a, b, without_sig_times(f), body)
                              for a, b, f, body in s["delivered"]]
    assert_same(w, "dkim", out)
    # The comparison was about something: what each case got (Postfix's).
    ar = {t: [f for f in s["postfix"]["delivered"][0][2] if f.startswith("Authentication-Results")]
          for t, s in out.items()}
    assert ar["dkim-sign"] == []
    assert re.search(r"dkim=pass .*header\.d=example\.com", ar["dkim-verify-pass"][0]), ar
    assert re.search(r"dkim=fail", ar["dkim-verify-fail"][0]), ar
    assert re.search(r"dkim=(permerror|neutral)", ar["dkim-verify-nokey"][0]), ar
    assert not any("evil.test" in f for f in out["dkim-foreign-ar"]["postfix"]["delivered"][0][2])
    assert not any("DKIM-Signature" in f
                   for f in out["dkim-sign-nokey-domain"]["postfix"]["delivered"][0][2])


# -- SPF -------------------------------------------------------------------------


def test_spf(world):
    w = world
    opts = {"xclient": SPF_CLIENT, "helo": "goodhelo.test"}
    cases = []
    for domain in ("pass", "fail", "soft", "neutral", "none", "perm", "temp"):
        token = "spf-%s" % domain
        cases.append((token, "user@%s.test" % domain, ["user@example.com"],
                      message(token, sender="someone@pass.test"), opts))
    cases += [
        ("spf-helo-fail", "user@pass.test", ["user@example.com"], message("spf-helo-fail"),
         {"xclient": SPF_CLIENT, "helo": "badhelo.test"}),
        ("spf-null-sender", "", ["user@example.com"], message("spf-null-sender"), opts),
        # authenticated (skip_authenticated): not checked
        ("spf-auth", "user@fail.test", ["user@example.com"], message("spf-auth"),
         dict(opts, auth=AUTH)),
        ("spf-trusted", "user@fail.test", ["user@example.com"],
         b"Authentication-Results: " + HOSTNAME.encode() + b"; spf=pass smtp.mailfrom=evil.test\r\n"
         + message("spf-trusted"), {"helo": "goodhelo.test"}),
    ]
    out, held = run_cases(w, "spf", cases)
    assert held["postfix"] == held["ternd"] == []
    assert_same(w, "spf", out)
    pf = {t: s["postfix"] for t, s in out.items()}
    assert pf["spf-fail"]["replies"]["mail"][0] == 550
    assert pf["spf-temp"]["replies"]["mail"][0] == 451
    assert pf["spf-helo-fail"]["replies"]["mail"][0] == 550
    for t, result in [("spf-pass", "pass"), ("spf-soft", "softfail"), ("spf-neutral", "neutral"),
                      ("spf-none", "none"), ("spf-perm", "permerror")]:
        fields = pf[t]["delivered"][0][2]
        assert fields[0].startswith("Received-SPF: %s " % result), (t, fields)
    for t in ("spf-trusted", "spf-auth"):
        assert not any(f.startswith("Received-SPF") or "evil.test" in f
                       for f in pf[t]["delivered"][0][2]), (t, pf[t])


# -- rules -----------------------------------------------------------------------


def rules_cases(corpus, bdat=()):
    """test_milter_rules.py's cases (its Message-IDs are unique) as cases
    here; those named in bdat are sent with BDAT as well (token + "-b")."""
    out = []
    for name, raw in corpus:
        out.append((token_of_raw(raw), "sender@client.test", ["user@example.com"], raw, {}))
        if name in bdat:
            token = token_of_raw(raw)
            out.append((token + "-b", "sender@client.test", ["user@example.com"],
                        raw.replace(token.encode(), (token + "-b").encode()), {"bdat": True}))
    return out


def token_of_raw(raw):
    return re.search(rb"Message-ID: <([^@>]+)@", raw).group(1).decode()


def test_rules(world):
    """Postfix's header_checks / body_checks actions, pcre header rules:
    REJECT, DISCARD, HOLD, PREPEND, REPLACE, IGNORE, STRIP, REDIRECT, BCC,
    PASS, WARN, DUNNO, if/endif, MIME part and attached-message headers,
    body lines; some also over BDAT."""
    w = world
    cases = rules_cases(RULES_CASES, bdat=("reject", "hold", "body-edits", "bcc",
                                            "mime-body-edit"))
    # two recipients: REDIRECT replaces both, BCC adds to both
    for token, subject in (("rules-redirect-two", "redirect me"), ("rules-bcc-two", "bcc me")):
        cases.append((token, "sender@client.test", ["user@example.com", "second@remote.test"],
                      message(token, subject=subject), {}))
    out, held = run_cases(w, "rules", cases)
    assert_same(w, "rules", out)
    assert held["ternd"] == held["postfix"] == [("sender@client.test", ["user@example.com"])] * 2
    pf = {t: s["postfix"] for t, s in out.items()}
    rcpts = {t: sorted(r for d in o["delivered"] for r, _ in d[1]) for t, o in pf.items()}
    code = {t: o["replies"]["data"][0] for t, o in pf.items()}
    assert code["please.reject.me"] == code["please.reject.me-b"] == 550
    assert code["body.one"] == 550 and code["mime"] == 550
    assert code["discard.me.now"] == 250 and rcpts["discard.me.now"] == []
    assert code["hold.me"] == 250 and rcpts["hold.me"] == []
    assert rcpts["redirect.me"] == ["other@example.com"]
    assert rcpts["rules-redirect-two"] == ["other@example.com"]
    assert rcpts["bcc.me"] == rcpts["bcc.me-b"] == ["copy@example.com", "user@example.com"]
    assert rcpts["rules-bcc-two"] == ["copy@example.com", "second@remote.test",
                                      "user@example.com"]
    assert any("X-Tag: prepended" in f for f in pf["prepend.me"]["delivered"][0][2])
    assert "changed it!" in pf["body.two"]["delivered"][0][3]


def test_rules_regexp_mime_and_limits(world):
    """The second corpus: regexp tables, mime_header_checks of its own, no
    nested_header_checks, body_checks_size_limit = 60, line_length_limit
    = 512."""
    w = world
    out, held = run_cases(w, "rulesre", rules_cases(REGEXP_CASES, bdat=("size-limit-edge5",)))
    assert_same(w, "rulesre", out)
    assert held["ternd"] == held["postfix"] == []
    pf = {t: s["postfix"] for t, s in out.items()}
    assert "changed early!" in pf["early"]["delivered"][0][3]
    assert "change late" in pf["late"]["delivered"][0][3]


# -- archive ---------------------------------------------------------------------


def test_archive(world):
    w = world
    cases = []
    n = 0
    for sender in ("alice@example.com", "carol@remote.test", ""):
        for rcpts in (["bob@example.com"], ["dave@remote.test"],
                      ["bob@example.com", "dave@remote.test"], ["bob@example.com", ARCHIVE]):
            n += 1
            token = "archive-%d" % n
            cases.append((token, sender, rcpts,
                          message(token, sender=sender or "mailer-daemon@example.com"), {}))
    extra = [("archive-client", "alice@example.com", ["bob@example.com"],
              message("archive-client", sender="alice@example.com"), {"xclient": SPF_CLIENT}),
             ("archive-sasl", "alice@example.com", ["bob@example.com"],
              message("archive-sasl", sender="alice@example.com"), {"auth": AUTH})]
    out, held = run_cases(w, "archive", cases + extra)
    assert held["postfix"] == held["ternd"] == []
    assert_same(w, "archive", out)
    for token, copy in (("archive-client", "client-copy@example.com"),
                        ("archive-sasl", "sasl-copy@example.com")):
        got = out[token]["postfix"]["delivered"]
        assert sorted(r for d in got for r, _ in d[1]) == ["bob@example.com", copy], got
    archived = 0
    for (token, sender, rcpts, _, _) in cases:
        got = out[token]["postfix"]["delivered"]
        env = sorted({r for d in got for r, _ in d[1]})
        outside = not sender.endswith("@example.com") or any(
            not r.endswith("@example.com") for r in rcpts)
        want = sorted(set(rcpts) | ({ARCHIVE} if outside else set()))
        assert env == want, (token, got)
        if outside and ARCHIVE not in rcpts:
            archived += 1
            params = [p for d in got for r, p in d[1] if r == ARCHIVE]
            assert params and all("NOTIFY=NEVER" in p for p in params), (token, got)
    assert archived >= 6


# -- outbound: what the comparisons above leave out -------------------------------


def test_orcpt_made_up_like_postfix(world):
    """The recipients' parameters as the sinks got them, nothing left out
    (the comparisons above drop an ORCPT that only repeats the recipient);
    "+" and "=" in an address are xtext-encoded (+2B, +3D)."""
    w = world
    token = "orcpt-1"
    raw = message(token, sender="alice@example.com")
    for side in w.sides:
        assert side.send("archive", "alice@example.com",
                         ["dave@remote.test", "dave+x=y@remote.test"], raw)["data"][0] == 250
    wait_idle(w.sides)
    got = {}
    for side in w.sides:
        got[side.name] = sorted((r, sorted("%s=%s" % kv for kv in p.items()))
                                for t in side.sink_transactions(token)
                                for r, p in zip(t["rcpts"], t["rcpt_params"]))
    assert ("dave+x=y@remote.test", ["ORCPT=rfc822;dave+2Bx+3Dy@remote.test"]) \
        in got["postfix"], got
    assert got["ternd"] == got["postfix"], got
