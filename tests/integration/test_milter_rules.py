"""test_milter_rules.py - tern-rules-milter against real Postfix 3.7.

Differential: the same header_checks / body_checks files are given to a
Postfix instance as its own `header_checks` / `body_checks` (the
reference) and, through tern-rules-milter, to a second Postfix instance
that has no checks of its own. The same messages go to both; the SMTP
answer, whether and where the message was delivered, the hold queue and
the delivered header and body (trace fields left out) must be the same.
"""

import email
import email.policy
import re
import time

import pytest

import harness
from milterworld import MilterWorld, milter_world  # noqa: F401  (fixture)
from pfinstance import PostfixInstance

MAILBOXES = {"user@example.com": "example.com/user/", "other@example.com": "example.com/other/",
             "copy@example.com": "example.com/copy/"}

HEADER_CHECKS = r"""# a Postfix header_checks file, pcre syntax
/^Subject:.*reject me/          REJECT rejected by rule
/^Subject:.*numeric reply/      554 5.7.9 not a header_checks action
/^Subject:.*strip me/           STRIP stripped
/^Subject:.*pass me/            PASS trusted
/^Subject:.*reject with code/   REJECT 5.7.3 my own code
/^Subject:.*discard me/         DISCARD dropped
/^Subject:.*hold me/            HOLD held for review
/^X-Drop:/                      IGNORE
/^X-Old: (.*)/                  REPLACE X-New: $1
/^Subject:.*prepend me/         PREPEND X-Tag: prepended
/^Subject:.*warn me/            WARN watch this
/^Subject:.*redirect me/        REDIRECT other@example.com
/^Subject:.*bcc me/             BCC copy@example.com
/^Subject:.*dunno/              DUNNO
if /^X-If:/
/yes/                           PREPEND X-If-Matched: yes
!/yes/                          IGNORE
endif
/^Content-Type:.*application\/x-bad/   REJECT bad attachment type
/^Content-Disposition:.*filename="?evil\.exe/   REJECT no executables
/^X-Folded:.*second line/       REPLACE X-Folded: unfolded
"""

BODY_CHECKS = r"""# a Postfix body_checks file, regexp syntax
/^body reject line$/            REJECT body rule
/^strip this line$/             IGNORE
/^change (.*)$/                 REPLACE changed ${1}!
/^prepend before$/              PREPEND inserted line
/^x{100}/                       REJECT long line piece
"""


HEADER_CHECKS_RE = r"""# regexp syntax
/^Subject:.*reject me/          REJECT rejected by rule
/^X-Drop:/                      IGNORE
/^Subject: (.*)prepend me/      PREPEND X-Tag: $1
/^Content-Type:.*x-bad/         REJECT not reached: MIME headers are in mime_header_checks
"""

MIME_CHECKS_RE = r"""/^Content-Type:.*application\/x-bad/   REJECT bad type (mime_header_checks)
/^Content-Disposition:.*evil/   REPLACE Content-Disposition: attachment; filename="renamed"
"""


def msg(subject, headers=(), body="Just a test.\r\n", ctype=None):
    h = ["From: Sender <sender@client.test>", "To: user@example.com", "Subject: %s" % subject,
         "Date: Sat, 21 Nov 2026 09:00:00 +0000",
         "Message-ID: <%s@client.test>" % re.sub(r"\W", ".", subject)]
    h += list(headers)
    if ctype:
        h += ["MIME-Version: 1.0", "Content-Type: %s" % ctype]
    return ("\r\n".join(h) + "\r\n\r\n" + body).encode()


MULTIPART = ("--XyZ\r\nContent-Type: text/plain\r\n\r\nhello\r\nchange me\r\n"
             "--XyZ\r\nContent-Type: %s\r\nContent-Disposition: attachment; filename=\"%s\"\r\n"
             "\r\nAAAA\r\n--XyZ--\r\n")
NESTED = ("--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
          "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
          "From: x@y.test\r\nSubject: %s\r\nX-Drop: nested\r\n\r\ninner body\r\nstrip this line\r\n"
          "--b1--\r\n")

CASES = [
    ("plain", msg("nothing matches")),
    ("reject", msg("please reject me")),
    ("numeric", msg("a numeric reply")),
    ("discard", msg("discard me now")),
    ("reject-code", msg("reject with code")),
    ("pass", msg("pass me, don't reject me", ["X-Drop: stays"])),
    ("strip", msg("strip me")),
    ("hold", msg("hold me")),
    ("ignore", msg("drop a header", ["X-Drop: gone", "X-Keep: kept", "X-Drop: gone too"])),
    ("replace", msg("replace a header", ["X-Old: value 1", "X-Keep: a", "X-Old: value 2"])),
    ("prepend", msg("prepend me")),
    ("warn", msg("warn me")),
    ("redirect", msg("redirect me")),
    ("bcc", msg("bcc me")),
    ("dunno", msg("dunno")),
    ("if-endif", msg("conditional", ["X-If: yes please", "X-If: no"])),
    ("folded", msg("folded", ["X-Folded: first line\r\n\tsecond line"])),
    ("body-reject", msg("body one", body="line 1\r\nbody reject line\r\nline 3\r\n")),
    ("body-edits", msg("body two", body="keep\r\nstrip this line\r\nchange it\r\n"
                                         "prepend before\r\nend\r\n")),
    ("long-line", msg("long line", body="a" * 3000 + "x" * 100 + "\r\n")),
    ("mime-reject", msg("mime", ctype='multipart/mixed; boundary="XyZ"',
                        body=MULTIPART % ("application/x-bad", "a.bin"))),
    ("mime-filename", msg("mime2", ctype="multipart/mixed; boundary=XyZ",
                          body=MULTIPART % ("application/octet-stream", "evil.exe"))),
    ("mime-body-edit", msg("mime3", ctype="multipart/mixed; boundary=XyZ",
                           body=MULTIPART % ("application/octet-stream", "fine.bin"))),
    ("nested-reject", msg("nested", ctype='multipart/mixed; boundary="b1"',
                          body=NESTED % "please reject me")),
    ("nested-edits", msg("nested2", ctype='multipart/mixed; boundary="b1"',
                         body=NESTED % "harmless")),
]

TRACE = re.compile(r"(?i)^(Received|Return-Path|X-Original-To|Delivered-To)$")


def boxes(pf):
    """{address: [(headers without trace fields, body)]} of delivered mail."""
    out = {}
    for addr in MAILBOXES:
        new = pf.maildir(addr) / "new"
        msgs = []
        for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime) if new.is_dir() else []:
            m = email.message_from_bytes(p.read_bytes(), policy=email.policy.compat32)
            hdrs = [(k, re.sub(r"\s+", " ", v).strip()) for k, v in m.items()
                    if not TRACE.match(k)]
            body = p.read_bytes().split(b"\n\n", 1)[1] if b"\n\n" in p.read_bytes() else b""
            msgs.append((hdrs, body))
        out[addr] = msgs
    return out


def busy(pf):
    return [f for f in pf.queue_files() if "/hold/" not in str(f)]


def wait_idle(pf, timeout=15):
    deadline = time.monotonic() + timeout
    while busy(pf):
        if time.monotonic() > deadline:
            raise AssertionError("postfix queue not empty: %s\n%s" % (busy(pf),
                                                                      pf.maillog_summary()[-3000:]))
        time.sleep(0.05)


def send(port, raw):
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as s:
        s.ehlo("client.test")
        s.mail("sender@client.test")
        s.rcpt("user@example.com")
        try:
            code, text = s.data(raw)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        return code, text.decode() if isinstance(text, bytes) else text


CORPORA = {
    # pcre header_checks for every class, regexp body_checks
    "pcre": ({"header_checks": HEADER_CHECKS, "body_checks": BODY_CHECKS},
             {"header_checks": "pcre:@D/header_checks", "body_checks": "regexp:@D/body_checks"}),
    # regexp syntax, MIME headers in their own file, attached messages not
    # inspected, a small body_checks_size_limit and line_length_limit
    "regexp": ({"hc": HEADER_CHECKS_RE, "mc": MIME_CHECKS_RE, "bc": BODY_CHECKS},
               {"header_checks": "regexp:@D/hc", "mime_header_checks": "regexp:@D/mc",
                "nested_header_checks": "", "body_checks": "regexp:@D/bc",
                "body_checks_size_limit": "60", "line_length_limit": "512"}),
}


def make_pair(milter_world, tmp_path, corpus):
    files, params = CORPORA[corpus]
    d = tmp_path / corpus
    params = {k: v.replace("@D", str(d)) for k, v in params.items()}
    conf = "user = tern\n" + "".join("%s = %s\n" % kv for kv in params.items())
    w = milter_world("rules", conf, MAILBOXES, files=files, sub=corpus)
    ref = PostfixInstance(tmp_path / (corpus + "-reference"), harness.free_port(),
                          myhostname="mx.pf.test", mailboxes=MAILBOXES, main=params)
    ref.start()
    return w, ref


@pytest.fixture
def pair(milter_world, tmp_path):
    refs = []

    def make(corpus):
        w, ref = make_pair(milter_world, tmp_path, corpus)
        refs.append(ref)
        return w, ref
    yield make
    for ref in refs:
        ref.stop()


def compare(w, ref, cases):
    for name, raw in cases:
        got = send(w.pf.port, raw)
        want = send(ref.port, raw)
        qid = re.compile(r"queued as [0-9A-F]+")
        assert (got[0], qid.sub("queued", got[1])) == (want[0], qid.sub("queued", want[1])), (
            name, got, want, w.log()[-2000:])
        wait_idle(w.pf)
        wait_idle(ref)
        a, b = boxes(w.pf), boxes(ref)
        assert a == b, (name, a, b, w.log()[-2000:])
        assert len(w.queue_ids("hold")) == len([f for f in ref.queue_files()
                                                 if "/hold/" in str(f)]), name


def test_rules_match_postfix_header_and_body_checks(pair):
    w, ref = pair("pcre")
    compare(w, ref, CASES)
    # Something was actually tested: rejections, a hold, deliveries.
    assert len(w.queue_ids("hold")) == 1
    delivered = sum(len(v) for v in boxes(ref).values())
    assert delivered >= 12, boxes(ref)
    log = w.log()
    assert re.search(r"tern/rules-milter\[\d+\]: [0-9A-F]+: reject: header Subject: please "
                     r"reject me from \S+\[127\.0\.0\.1\]; from=<sender@client\.test> "
                     r"to=<user@example\.com> helo=<client\.test>: 5\.7\.1 rejected by rule", log)
    assert re.search(r": warning: header Subject: warn me from .*: watch this", log)


REGEXP_CASES = [
    ("plain", msg("nothing")),
    ("reject", msg("please reject me")),
    ("ignore", msg("drop", ["X-Drop: gone"])),
    ("prepend", msg("a prepend me")),
    ("mime-reject", msg("mime", ctype='multipart/mixed; boundary="XyZ"',
                        body=MULTIPART % ("application/x-bad", "a.bin"))),
    ("mime-replace", msg("mime2", ctype="multipart/mixed; boundary=XyZ",
                         body=MULTIPART % ("application/octet-stream", "evil.exe"))),
    # nested_header_checks is empty: the attached Subject is not looked at
    ("nested-not-checked", msg("nested", ctype='multipart/mixed; boundary="b1"',
                               body=NESTED % "please reject me")),
    # body_checks_size_limit = 60: rules match only early in each segment
    ("size-limit-early", msg("early", body="change early\r\n" + "filler line\r\n" * 10)),
    ("size-limit-late", msg("late", body="filler line\r\n" * 10 + "change late\r\n")),
    # offsets count each line end and the header/body separator: the 6th
    # line starts at 61 (not inspected), the 5th at 49 (inspected)
    ("size-limit-edge6", msg("edge6", body="filler line\r\n" * 5 + "change six\r\n")),
    ("size-limit-edge5", msg("edge5", body="filler line\r\n" * 4 + "change five\r\n")),
    ("size-limit-per-part", msg("parts", ctype="multipart/mixed; boundary=XyZ",
                                body="--XyZ\r\n\r\n" + "filler line\r\n" * 10 +
                                "--XyZ\r\n\r\nchange in part two\r\n--XyZ--\r\n")),
    # line_length_limit = 512: a longer line is inspected in pieces
    ("long-line-first-piece", msg("long1", body="x" * 100 + "y" * 600 + "\r\n")),
    ("long-line-second-piece", msg("long2", body="y" * 512 + "x" * 100 + "\r\n")),
]


def test_rules_match_postfix_regexp_mime_and_limits(pair):
    w, ref = pair("regexp")
    compare(w, ref, REGEXP_CASES)
