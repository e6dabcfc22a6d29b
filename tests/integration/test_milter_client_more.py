"""test_milter_client_more.py - more of ternd as a milter client:

- smtpd_milter_maps (Postfix 3.2): the client address picks the milter
  list (a cidr table and an inline one), DISABLE turns milters off, no
  match falls back to smtpd_milters, the maps work alone, and XCLIENT
  picks again for the new address: Postfix 3.7 (pfinstance.py) with the
  same table decides the same way. A table that fails refuses the
  session with 421 4.3.5 and a warning; there Postfix 3.7 differs (a
  warning, then smtpd_milters), and the test says so;
- the macros {client_resolve} (compared with Postfix for the XCLIENT
  cases, and from the name lookup), {client_connections}, {cert_subject},
  {cert_issuer} and {tls_sni} (STARTTLS with client certificates from a
  test CA made with openssl here; compared with Postfix but {tls_sni},
  which is 3.12; {client_connections} compared too), including the cases
  where Postfix's values are easy to get wrong: {client_resolve} after
  XCLIENT NAME=[UNAVAILABLE] with a REVERSE_NAME (FAIL), the certificate
  macros for an unverified or missing certificate (not sent), and
  {client_connections} of a client in smtpd_authorized_xclient_hosts (0);
- packets no one answers (macros, events under SMFIP_NR_*, ABORT) held back
  until the next packet that is answered: a milter with every NR bit sees
  the same packets, in the same order, as one with none; one that answers
  only RCPT still refuses a recipient; EHLO then QUIT still gets CONNECT,
  HELO and QUIT to a milter that answers nothing; and the every-NR milter
  gets the same packets from Postfix 3.7 as from ternd (ABORTs, CONNECT's
  name and port aside), including the UNKNOWN text (the command word
  only) and the eoh/eod macros before each HEADER and BODY packet.

The milter is a raw-protocol recorder (RecMilter) that keeps every packet
with its macros; it answers "continue" to whatever it did not set NR for,
and "accept" at the end of the message.
"""

import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness
from pfinstance import PostfixInstance
from restr_util import Smtp, log_text, wait_log
from test_milter_client import start_ternd, wait_mail

# SMFIP_* protocol bits (libmilter mfdef.h)
NR_HDR = 0x80
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
NR_ALL = NR_HDR | NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_DATA | NR_UNKN | NR_EOH | NR_BODY
NR_BIT = {"C": NR_CONN, "H": NR_HELO, "M": NR_MAIL, "R": NR_RCPT, "T": NR_DATA,
          "U": NR_UNKN, "N": NR_EOH, "B": NR_BODY, "L": NR_HDR}

MESSAGE = ("From: a@example.org\r\nTo: joe@example.test\r\nSubject: more\r\n"
           "Message-ID: <more@example.org>\r\n\r\nthe body\r\n")


def pkt(cmd, data=b""):
    return (len(data) + 1).to_bytes(4, "big") + cmd.encode() + data


class RecMilter:
    """A milter speaking the wire protocol: OPTNEG with `proto`, then per
    event answer(cmd, data) -> packet bytes, or None for "continue" (not
    sent for the events under NR bits, nor for D, A, Q, K). sessions: per
    milter connection, [(cmd, data, arrival time)]."""

    def __init__(self, proto=0, answer=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.endpoint = "inet:127.0.0.1:%d" % self.port
        self.proto = proto
        self.answer = answer or (lambda cmd, data: None)
        self.sessions = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        f = c.makefile("rb")
        seen = []
        with self.lock:
            self.sessions.append(seen)
        try:
            while True:
                hdr = f.read(4)
                if len(hdr) < 4:
                    return
                data = f.read(int.from_bytes(hdr, "big"))
                cmd, data = chr(data[0]), data[1:]
                seen.append((cmd, data, time.monotonic()))
                if cmd == "O":
                    c.sendall(pkt("O", (6).to_bytes(4, "big") + (0x1ff).to_bytes(4, "big") +
                                  self.proto.to_bytes(4, "big")))
                elif cmd in "DAQK" or (NR_BIT.get(cmd, 0) & self.proto):
                    continue
                else:
                    out = self.answer(cmd, data)
                    if out is None:
                        out = pkt("a") if cmd == "E" else pkt("c")
                    c.sendall(out)
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.sock.close()

    def real_sessions(self):
        """The sessions with a HELO: the readiness probes of ternd and
        Postfix (connect, then close at once) left out."""
        with self.lock:
            return [s for s in self.sessions if any(c == "H" for c, _, _ in s)]

    def wait_probe(self):
        """Until a probe's session (no HELO) has ended: it counted as a
        connection of its client until then."""
        harness.wait_for(lambda: any(s[-1][0] == "Q" and all(c != "H" for c, _, _ in s)
                                     for s in list(self.sessions)), what="probe session end")

    def events(self, n=-1):
        """Session n as [(cmd, macros, data)], each D folded into the event after it."""
        out, macros = [], {}
        for cmd, data, _ in self.real_sessions()[n]:
            if cmd == "D":
                parts = data[1:].split(b"\0")
                macros = {parts[i].decode(): parts[i + 1].decode()
                          for i in range(0, len(parts) - 1, 2)}
                continue
            out.append((cmd, macros, data))
            macros = {}
        return out

    def connect_addr(self, n=-1):
        """The client address of the CONNECT packet of session n."""
        data = next(d for c, _, d in self.events(n) if c == "C")
        host, rest = data.split(b"\0", 1)
        return rest[3:].rstrip(b"\0").decode()  # family byte, 2 port bytes, address


def wait_sessions(milter, n, what="", timeout=10.0, end="Q"):
    """Wait until milter has n sessions, the last one ended (QUIT seen)."""
    harness.wait_for(lambda: len(milter.real_sessions()) >= n and
                     (not end or milter.real_sessions()[n - 1][-1][0] == end),
                     timeout=timeout, what="%d milter session(s) %s" % (n, what))


class SmtpFrom(Smtp):
    """Smtp from a chosen loopback source address (127.0.0.0/8 all works)."""

    def __init__(self, port, source="127.0.0.1", timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.f = self.sock.makefile("rb")
        self.greeting = self.reply()


def transaction(port, source="127.0.0.1", xclient=None, rcpt="joe@example.test"):
    """One message from source; returns the replies [greeting, EHLO, ..., DATA]."""
    s = SmtpFrom(port, source)
    out = [s.greeting]
    if not s.greeting.startswith("220"):
        s.sock.close()
        return out
    out.append(s.cmd("EHLO client.example.net"))
    if xclient:
        out.append(s.cmd("XCLIENT %s" % xclient))
        out.append(s.cmd("EHLO client.example.net"))
    out.append(s.cmd("MAIL FROM:<a@example.org>"))
    out.append(s.cmd("RCPT TO:<%s>" % rcpt))
    if out[-1].startswith("250"):
        out.append(s.message(MESSAGE))
    s.close()
    return out


@pytest.fixture
def milters():
    made = []

    def make(proto=0, answer=None):
        m = RecMilter(proto, answer)
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


@pytest.fixture
def postfix(tmp_path):
    """A private Postfix 3.7 delivering example.test/joe like ternd here."""
    made = []

    def make(**main):
        settings = {"milter_default_action": "tempfail", "smtpd_authorized_xclient_hosts":
                    "127.0.0.0/8"}
        settings.update(main)
        pf = PostfixInstance(tmp_path / ("pf%d" % len(made)), harness.free_port(),
                             mailboxes={"joe@example.test": "example.test/joe/"},
                             main=settings)
        made.append(pf)
        pf.start()
        return pf
    yield make
    for pf in made:
        pf.stop()


# ---- smtpd_milter_maps -------------------------------------------------------


MAP_CASES = [  # (source address, which milter gets the session: "default", "other", None)
    ("127.0.0.1", "default"),  # no match: smtpd_milters
    ("127.0.0.2", "other"),    # a list of its own, instead of smtpd_milters
    ("127.0.0.3", None),       # DISABLE
    ("127.0.0.4", "both"),     # a list with both, each with its settings
]


def map_text(default, other):
    return ("127.0.0.2/32 { %s, command_timeout=7s }\n"
            "127.0.0.3 DISABLE\n"
            "127.0.0.4 %s, %s\n" % (other.endpoint, default.endpoint, other.endpoint))


def map_outcome(default, other, before):
    got = []
    for name, m in (("default", default), ("other", other)):
        if len(m.real_sessions()) > before[name]:
            got.append(name)
    return "both" if len(got) == 2 else (got[0] if got else None)


def run_map_cases(port, default, other, cases=MAP_CASES):
    outcomes = {}
    for source, _ in cases:
        before = {"default": len(default.real_sessions()), "other": len(other.real_sessions())}
        replies = transaction(port, source)
        assert replies[-1].startswith("250 2.0.0 Ok"), (source, replies)
        time.sleep(0.3)  # a milter that should not be asked has time to be asked
        outcomes[source] = map_outcome(default, other, before)
        for name, m in (("default", default), ("other", other)):
            if outcomes[source] in (name, "both"):
                wait_sessions(m, before[name] + 1, name)
                assert m.connect_addr() == source
                kinds = [e[0] for e in m.events()]
                # after EOM: ABORT (Postfix sends two), then QUIT
                assert "E" in kinds and kinds[-1] == "Q" and \
                    set(kinds[kinds.index("E") + 1:-1]) <= {"A"}, kinds
    return outcomes


def test_maps_cidr_pick_the_milters(config_dir, start_program, milters):
    default, other = milters(), milters()
    cidr = config_dir.write_table("milters.cidr", map_text(default, other))
    port = start_ternd(config_dir, start_program, smtpd_milters=default.endpoint,
                       smtpd_milter_maps="cidr:%s" % cidr)
    assert run_map_cases(port, default, other) == dict(MAP_CASES)


def test_maps_same_as_postfix(config_dir, start_program, milters, postfix, tmp_path):
    """The same cidr table under Postfix 3.7: the same milters are asked."""
    default, other = milters(), milters()
    table = tmp_path / "milters.cidr"
    table.write_text(map_text(default, other))
    table.chmod(0o644)
    harness.traversable(tmp_path)
    pf = postfix(smtpd_milters=default.endpoint, smtpd_milter_maps="cidr:%s" % table)
    pf_outcome = run_map_cases(pf.port, default, other)
    assert pf_outcome == dict(MAP_CASES)
    port = start_ternd(config_dir, start_program, smtpd_milters=default.endpoint,
                       smtpd_milter_maps="cidr:%s" % table)
    assert run_map_cases(port, default, other) == pf_outcome


def test_maps_inline_only_without_smtpd_milters(config_dir, start_program, milters):
    """smtpd_milter_maps alone (smtpd_milters empty): a match gets its
    milter, any other client none; two tables, the first match wins."""
    m = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters="",
                       smtpd_milter_maps="inline:{ 127.0.0.5=DISABLE }, "
                                         "inline:{ 127.0.0.2=%s, 127.0.0.5=%s }"
                       % (m.endpoint, m.endpoint))
    for source, asked in (("127.0.0.1", False), ("127.0.0.2", True), ("127.0.0.5", False)):
        before = len(m.real_sessions())
        assert transaction(port, source)[-1].startswith("250 2.0.0 Ok")
        if asked:
            wait_sessions(m, before + 1)
            assert m.connect_addr() == source
        else:
            time.sleep(0.3)
            assert len(m.real_sessions()) == before, source
    wait_mail(config_dir, "joe", 3)


def test_maps_lookup_error_refuses_the_session(config_dir, start_program, milters, postfix,
                                              tmp_path):
    """A table that fails (socketmap to a port nobody listens on): 421
    4.3.5 and a warning, never mail without its milters; a client found
    in an earlier table is unaffected. (Postfix 3.7 differs, see below.)"""
    m = milters()
    dead = harness.free_port()
    maps = "inline:{ 127.0.0.2=%s }, socketmap:inet:127.0.0.1:%d:milters" % (m.endpoint, dead)
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       smtpd_milter_maps=maps, smtpd_authorized_xclient_hosts="127.0.0.0/8")
    s = SmtpFrom(port, "127.0.0.1")
    assert s.greeting == "421 4.3.5 Server configuration problem - try again later", s.greeting
    with pytest.raises(ConnectionError):
        s.reply()
    wait_log(config_dir, r"warning: smtpd_milter_maps: .*socketmap:inet:127\.0\.0\.1:%d:milters"
             % dead)
    assert len(m.real_sessions()) == 0
    # the first table has 127.0.0.2: the broken one is not asked
    assert transaction(port, "127.0.0.2")[-1].startswith("250 2.0.0 Ok")
    wait_sessions(m, 1)
    # XCLIENT to an address only the broken table could answer: the same 421
    s = SmtpFrom(port, "127.0.0.2")
    assert s.cmd("EHLO client.example.net").startswith("250")
    r = s.cmd("XCLIENT ADDR=127.0.0.9")
    assert r == "421 4.3.5 Server configuration problem - try again later", r
    with pytest.raises(ConnectionError):
        s.reply()
    wait_log(config_dir, r"warning: smtpd_milter_maps: .* lookup error for 127\.0\.0\.9")
    # Postfix 3.7, the same tables: a warning, then smtpd_milters as if
    # no table had matched (with only maps, no milters): ternd refuses
    # instead, so that mail never passes unfiltered because a table failed
    pf = postfix(smtpd_milters=m.endpoint, smtpd_milter_maps=maps)
    replies = transaction(pf.port, "127.0.0.1")
    assert replies[0].startswith("220") and replies[-1].startswith("250 2.0.0 Ok"), replies
    wait_sessions(m, 2)
    assert m.connect_addr() == "127.0.0.1"
    pf.wait_log(r'warning: socketmap:inet:127\.0\.0\.1:%d:milters lookup error for "127\.0\.0\.1"'
                % dead)


@pytest.mark.parametrize("mta", ["ternd", "postfix"])
def test_xclient_picks_the_milters_again(config_dir, start_program, milters, postfix, tmp_path,
                                         mta):
    """XCLIENT to another address: the milters of the old client get QUIT,
    those of the new one a CONNECT with the new address (and DISABLE
    none at all); Postfix 3.7 the same."""
    default, other = milters(), milters()
    table = tmp_path / "milters.cidr"
    table.write_text(map_text(default, other))
    table.chmod(0o644)
    harness.traversable(tmp_path)
    settings = dict(smtpd_milters=default.endpoint, smtpd_milter_maps="cidr:%s" % table,
                    smtpd_authorized_xclient_hosts="127.0.0.0/8")
    if mta == "ternd":
        port = start_ternd(config_dir, start_program, **settings)
    else:
        port = postfix(**settings).port
    replies = transaction(port, "127.0.0.1", xclient="ADDR=127.0.0.2")
    assert replies[2].startswith("220") and replies[-1].startswith("250 2.0.0 Ok"), replies
    wait_sessions(default, 1)
    wait_sessions(other, 1)
    # (Postfix sends an ABORT first, outside any message; ternd does not)
    assert [e[0] for e in default.events() if e[0] != "A"] == ["O", "C", "H", "Q"]
    assert default.connect_addr() == "127.0.0.1"
    assert other.connect_addr() == "127.0.0.2"
    assert [e[0] for e in other.events()][:3] == ["O", "C", "H"]
    assert "M" in [e[0] for e in other.events()]
    # from a client with its own list to a DISABLEd one: no milter sees the mail
    replies = transaction(port, "127.0.0.2", xclient="ADDR=127.0.0.3")
    assert replies[-1].startswith("250 2.0.0 Ok"), replies
    wait_sessions(other, 2)
    assert [e[0] for e in other.events() if e[0] != "A"] == ["O", "C", "H", "Q"]
    time.sleep(0.3)
    assert len(default.real_sessions()) == 1


# ---- macros --------------------------------------------------------------------


CONNECT_MACROS = "{client_addr} {client_name} {client_resolve} {client_connections}"
HELO_MACROS = "{tls_version} {cert_subject} {cert_issuer} {tls_sni}"

RESOLVE_CASES = [  # XCLIENT, {client_resolve}
    ("NAME=mail.example.net REVERSE_NAME=mail.example.net", "OK"),
    # FORGED comes only from a real lookup (a name that does not map back):
    # Postfix's XCLIENT NAME=[UNAVAILABLE] is a permanent failure, FAIL
    ("NAME=[UNAVAILABLE] REVERSE_NAME=mail.example.net", "FAIL"),
    ("NAME=[TEMPUNAVAIL] REVERSE_NAME=mail.example.net", "TEMP"),
    ("NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE]", "FAIL"),
]


def resolve_macros(port, m):
    out = []
    for i, (xclient, _) in enumerate(RESOLVE_CASES):
        s = SmtpFrom(port)
        s.cmd("EHLO client.example.net")
        assert s.cmd("XCLIENT ADDR=192.0.2.7 %s" % xclient).startswith("220")
        assert s.cmd("EHLO client.example.net").startswith("250")
        s.close()
        wait_sessions(m, 2 * i + 2)
        c = [e for e in m.events() if e[0] == "C"][0]
        out.append((c[1].get("{client_resolve}"), c[1].get("{client_name}"),
                    c[1].get("{client_connections}")))
    return out


def test_client_resolve_as_postfix(config_dir, start_program, milters, postfix):
    m = milters()
    pf = postfix(smtpd_milters=m.endpoint, milter_connect_macros=CONNECT_MACROS)
    pf_got = resolve_macros(pf.port, m)
    assert [g[0] for g in pf_got] == [r for _, r in RESOLVE_CASES], pf_got
    m2 = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters=m2.endpoint,
                       milter_connect_macros=CONNECT_MACROS,
                       smtpd_authorized_xclient_hosts="127.0.0.0/8")
    got = resolve_macros(port, m2)
    # all but NAME=[UNAVAILABLE] with a REVERSE_NAME (test_client_resolve_xclient_no_name)
    assert got[:1] + got[2:] == pf_got[:1] + pf_got[2:]


def test_client_resolve_xclient_no_name(config_dir, start_program, milters):
    m = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       milter_connect_macros=CONNECT_MACROS,
                       smtpd_authorized_xclient_hosts="127.0.0.0/8")
    assert resolve_macros(port, m)[1][0] == "FAIL"  # as Postfix 3.7


def test_client_resolve_from_the_lookup(config_dir, start_program, milters, dns):
    """smtpd_peername_lookup = yes: 127.0.0.1 is localhost, confirmed (OK);
    127.0.0.9 has no name (FAIL). (libunbound answers the loopback reverse
    zone itself, so FORGED and TEMP cannot be made on loopback.)"""
    m = milters()
    d = dns(a={"mail.example.net": ["127.0.0.9"]})
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       milter_connect_macros=CONNECT_MACROS, smtpd_peername_lookup="yes",
                       dns_servers=d.server)
    got = []
    for n, source in enumerate(("127.0.0.1", "127.0.0.9")):
        s = SmtpFrom(port, source)
        assert s.cmd("EHLO client.example.net").startswith("250")
        s.close()
        wait_sessions(m, n + 1)
        c = [e for e in m.events() if e[0] == "C"][0]
        got.append((c[1].get("{client_name}"), c[1].get("{client_resolve}")))
    assert got == [("localhost", "OK"), ("unknown", "FAIL")], got


def test_client_connections(config_dir, start_program, milters):
    """{client_connections}: this client's sessions, this one included;
    0 for a client exempt from the limits (smtpd_client_event_limit_exceptions)."""
    m = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       milter_connect_macros=CONNECT_MACROS,
                       smtpd_client_connection_count_limit="10",
                       smtpd_client_event_limit_exceptions="127.0.0.9")
    m.wait_probe()
    first = SmtpFrom(port, "127.0.0.1")
    second = SmtpFrom(port, "127.0.0.1")
    third = SmtpFrom(port, "127.0.0.9")
    for s in (first, second, third):
        assert s.greeting.startswith("220"), s.greeting
        assert s.cmd("EHLO client.example.net").startswith("250")
    for s in (first, second, third):
        s.close()
    harness.wait_for(lambda: len(m.real_sessions()) == 3 and
                     all(x[-1][0] == "Q" for x in m.real_sessions()), what="3 sessions")
    got = sorted((e[1]["{client_addr}"], e[1]["{client_connections}"])
                 for n in range(3) for e in m.events(n) if e[0] == "C")
    assert got == [("127.0.0.1", "1"), ("127.0.0.1", "2"), ("127.0.0.9", "0")], got


def connection_counts(port, m):
    """{client_connections} of two sessions open at once from 127.0.0.1."""
    m.wait_probe()
    before = len(m.real_sessions())
    first, second = SmtpFrom(port), SmtpFrom(port)
    for s in (first, second):
        assert s.cmd("EHLO client.example.net").startswith("250")
    for s in (first, second):
        s.close()
    harness.wait_for(lambda: len(m.real_sessions()) == before + 2 and
                     all(x[-1][0] == "Q" for x in m.real_sessions()), what="2 sessions")
    return sorted(e[1].get("{client_connections}") for n in (-1, -2) for e in m.events(n)
                  if e[0] == "C")


@pytest.mark.parametrize("xclient_hosts", [
    "",
    "127.0.0.0/8",
])
def test_client_connections_as_postfix(config_dir, start_program, milters, postfix,
                                       xclient_hosts):
    """The same counts as Postfix 3.7, with a connection limit and no
    exceptions; a client allowed XCLIENT is left out of the counting there."""
    settings = dict(milter_connect_macros=CONNECT_MACROS,
                    smtpd_client_connection_count_limit="10",
                    smtpd_client_event_limit_exceptions="",
                    smtpd_authorized_xclient_hosts=xclient_hosts)
    m = milters()
    pf = postfix(smtpd_milters=m.endpoint, **settings)
    pf_counts = connection_counts(pf.port, m)
    m2 = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters=m2.endpoint, **settings)
    assert connection_counts(port, m2) == pf_counts


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA; a server certificate for tern.test; a client certificate
    from the CA and a self-signed one."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=More Test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, cn in (("server", "tern.test"), ("client", "client.example")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
                "-keyout", "%s.key" % name, "-out", "%s.csr" % name)
        openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", "%s.pem" % name)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=stranger.example", "-keyout", "self.key", "-out", "self.pem")
    for p in d.iterdir():
        p.chmod(0o644)
    harness.traversable(d)
    return d


def tls_helo_macros(port, pki, cert, sni="tern.test"):
    """EHLO, STARTTLS with cert ("client", "self" or None), EHLO, QUIT:
    the macros of the HELO event after TLS."""
    s = SmtpFrom(port)
    s.cmd("EHLO client.example.net")
    assert s.cmd("STARTTLS").startswith("220")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(pki / ("%s.pem" % cert)), str(pki / ("%s.key" % cert)))
    s.sock = ctx.wrap_socket(s.sock, server_hostname=sni)
    s.f = s.sock.makefile("rb")
    assert s.cmd("EHLO client.example.net").startswith("250")
    s.close()


def tls_settings(pki):
    return dict(smtpd_tls_security_level="may", smtpd_tls_ask_ccert="yes",
                smtpd_tls_CAfile=str(pki / "ca.pem"), milter_helo_macros=HELO_MACROS)


def ternd_tls_macros(config_dir, start_program, milters, pki):
    """ternd asking for client certificates: {cert: HELO macros after STARTTLS}."""
    m = milters()
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       smtpd_tls_cert_file=str(pki / "server.pem"),
                       smtpd_tls_key_file=str(pki / "server.key"), **tls_settings(pki))
    got = {}
    for cert in ("client", "self", None):
        tls_helo_macros(port, pki, cert)
        wait_sessions(m, len(got) + 1)
        helos = [e[1] for e in m.events() if e[0] == "H"]
        assert "{tls_version}" not in helos[0]  # the EHLO before STARTTLS
        got[cert] = helos[1]
    return got


def test_tls_macros(config_dir, start_program, milters, pki, postfix):
    """{cert_subject}/{cert_issuer}: the CNs of a verified client
    certificate; {tls_sni}: the name the client sent (Postfix 3.12); none
    before STARTTLS. Postfix 3.7, the same sessions: the same values for
    the verified certificate, and none at all for a self-signed one or
    none (test_cert_macros_only_when_verified)."""
    got = ternd_tls_macros(config_dir, start_program, milters, pki)
    assert got["client"]["{cert_subject}"] == "client.example"
    assert got["client"]["{cert_issuer}"] == "More Test CA"
    assert got["client"]["{tls_sni}"] == "tern.test"
    assert got[None]["{tls_sni}"] == "tern.test"
    # Postfix 3.7 (no {tls_sni} yet)
    m2 = milters()
    pf = postfix(smtpd_milters=m2.endpoint, smtpd_tls_cert_file=pki / "server.pem",
                 smtpd_tls_key_file=pki / "server.key", **tls_settings(pki))
    pf_got = {}
    for cert in ("client", "self", None):
        tls_helo_macros(pf.port, pki, cert)
        wait_sessions(m2, len(pf_got) + 1)
        pf_got[cert] = [e[1] for e in m2.events() if e[0] == "H"][1]
    assert {k: v for k, v in got["client"].items() if k != "{tls_sni}"} == pf_got["client"]
    assert pf_got["self"] == pf_got[None] == {"{tls_version}": got[None]["{tls_version}"]}


def test_cert_macros_only_when_verified(config_dir, start_program, milters, pki):
    got = ternd_tls_macros(config_dir, start_program, milters, pki)
    for cert in ("self", None):
        assert "{cert_subject}" not in got[cert] and "{cert_issuer}" not in got[cert], got


# ---- packets held back (no-reply events) ---------------------------------------


def full_session(port):
    s = SmtpFrom(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("NOOP-LIKE unknown").startswith("500")
    assert s.cmd("MAIL FROM:<first@example.org>").startswith("250")
    assert s.cmd("RSET").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    r = s.message(MESSAGE)
    assert r.startswith("250 2.0.0 Ok: queued as "), r
    s.close()
    return r.split()[-1]


def test_no_reply_milter_sees_what_a_replying_one_sees(config_dir, start_program, milters):
    """Two milters in one session: every NR bit, and none. The same
    packets in the same order (macros included), the message delivered."""
    quiet, chatty = milters(NR_ALL), milters(0)
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="%s, %s" % (quiet.endpoint, chatty.endpoint),
                       milter_connect_macros="j {client_addr} {client_resolve}",
                       milter_mail_macros="{mail_addr}", milter_rcpt_macros="{rcpt_addr}",
                       milter_unknown_command_macros="{client_addr}",
                       milter_end_of_data_macros="i")
    qid = full_session(port)
    wait_mail(config_dir, "joe")
    wait_sessions(quiet, 1)
    wait_sessions(chatty, 1)
    q, c = quiet.events(), chatty.events()
    assert [e[0] for e in q] == ["O", "C", "H", "U", "M", "A", "M", "R", "T", "L", "L", "L",
                                 "L", "N", "B", "E", "Q"], q
    assert q[1:] == c[1:]
    assert q[1][1]["{client_resolve}"] == "FAIL"  # smtpd_peername_lookup = no
    assert q[4][1] == {"{mail_addr}": "first@example.org"}
    assert q[6][1] == {"{mail_addr}": "a@example.org"}
    assert q[7][1] == {"{rcpt_addr}": "joe@example.test"}
    assert q[-2][1] == {"i": qid}


def normalized(m):
    """The last session's events, ABORTs aside (Postfix sends two after
    the end of message, ternd none), CONNECT reduced to the address (the
    name and port differ by MTA), UNKNOWN to its first word, HEADER and
    BODY without macros (test_unknown_and_header_packets_as_postfix)."""
    out = []
    for c, mac, data in m.events():
        if c == "C":
            data = m.connect_addr().encode()
        elif c == "U":
            data = data.split(b" ")[0].rstrip(b"\0") + b"\0"
        elif c in "LB":
            mac = {}
        if c not in "AO":
            out.append((c, mac, data))
    return out


NR_MACROS = dict(milter_connect_macros="{client_addr}", milter_helo_macros="{client_addr}",
                 milter_mail_macros="{mail_addr}", milter_rcpt_macros="{rcpt_addr}",
                 milter_data_macros="{mail_addr}", milter_end_of_header_macros="{client_addr}",
                 milter_unknown_command_macros="{client_addr}",
                 milter_end_of_data_macros="{client_addr}")


def nr_session(port, m):
    """From 127.0.0.2 (Postfix adds no Date: for it): EHLO, an unknown
    command, MAIL, RSET, a message; the milter's session."""
    s = SmtpFrom(port, "127.0.0.2")
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("FROB unknown").startswith("50")  # ternd 500, Postfix 502
    assert s.cmd("MAIL FROM:<first@example.org>").startswith("250")
    assert s.cmd("RSET").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    assert s.message(MESSAGE).startswith("250 2.0.0 Ok")
    s.close()
    wait_sessions(m, 1)
    return m.events()


def test_no_reply_milter_same_packets_as_postfix(config_dir, start_program, milters, postfix):
    """The milter with every NR bit, one session each under Postfix 3.7
    and ternd: the same events, macros and data in the same order."""
    got = []
    for mta in ("postfix", "ternd"):
        m = milters(NR_ALL)
        if mta == "postfix":
            port = postfix(smtpd_milters=m.endpoint, **NR_MACROS).port
        else:
            port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint, **NR_MACROS)
        nr_session(port, m)
        got.append(normalized(m))
    assert [e[0] for e in got[0]] == ["C", "H", "U", "M", "M", "R", "T", "L", "L", "L", "L",
                                      "N", "B", "E", "Q"], got[0]
    assert got[1] == got[0]


def test_unknown_and_header_packets_as_postfix(config_dir, start_program, milters):
    m = milters(NR_ALL)
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint, **NR_MACROS)
    ev = nr_session(port, m)
    assert [d for c, _, d in ev if c == "U"] == [b"FROB\0"]
    assert all(mac == {"{client_addr}": "127.0.0.2"} for c, mac, _ in ev if c in "LB"), ev


def test_no_reply_for_some_events(config_dir, start_program, milters):
    """NR for CONNECT, HELO and MAIL; RCPT answered: a refusal at RCPT
    still comes out, the MAIL before it was seen first."""
    def answer(cmd, data):
        if cmd == "R" and data.startswith(b"<bad"):
            return pkt("y", b"550 5.7.1 not this one\0")
        return None

    m = milters(NR_CONN | NR_HELO | NR_MAIL, answer)
    port = start_ternd(config_dir, start_program, smtpd_milters=m.endpoint,
                       milter_mail_macros="{mail_addr}")
    s = SmtpFrom(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    assert s.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert s.cmd("RCPT TO:<bad@example.test>") == "550 5.7.1 not this one"
    assert s.cmd("RCPT TO:<joe@example.test>").startswith("250")
    assert s.message(MESSAGE).startswith("250 2.0.0 Ok")
    s.close()
    wait_mail(config_dir, "joe")
    wait_sessions(m, 1)
    ev = m.events()
    assert [e[0] for e in ev][:6] == ["O", "C", "H", "M", "R", "R"], ev
    assert ev[3][1] == {"{mail_addr}": "a@example.org"}
    assert ev[4][2].startswith(b"<bad@example.test>")
    wait_log(config_dir, r"milter-reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.7\.1 "
             r"not this one; from=<a@example\.org> to=<bad@example\.test>")


def test_quit_without_a_message(config_dir, start_program, milters):
    """EHLO then QUIT: a milter that answers nothing still gets CONNECT,
    HELO and QUIT (held back until the end, then sent together), one that
    answers gets them as they happen."""
    quiet, chatty = milters(NR_ALL), milters(0)
    port = start_ternd(config_dir, start_program,
                       smtpd_milters="%s, %s" % (quiet.endpoint, chatty.endpoint))
    s = SmtpFrom(port)
    assert s.cmd("EHLO client.example.net").startswith("250")
    time.sleep(0.3)
    t_quit = time.monotonic()
    s.close()
    wait_sessions(quiet, 1)
    wait_sessions(chatty, 1)
    assert [e[0] for e in quiet.events()] == ["O", "C", "H", "Q"]
    assert quiet.events()[1:] == chatty.events()[1:]
    quiet_times = {cmd: t for cmd, _, t in quiet.real_sessions()[0]}
    chatty_times = {cmd: t for cmd, _, t in chatty.real_sessions()[0]}
    assert quiet_times["C"] >= t_quit  # held back...
    assert chatty_times["H"] < t_quit  # ...where the other was asked at once
    wait_log(config_dir, r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1 quit=1 commands=2")
    assert "warning: milter" not in log_text(config_dir)
