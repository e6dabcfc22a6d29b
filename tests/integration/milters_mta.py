"""milters_mta.py - one private Postfix 3.7 and one ternd side by side, each
with a listener per milter, both relaying everything to their own
FakeSMTP sink: the harness of test_milters_ternd.py.

Every milter gets one listener on each MTA (Postfix: a master.cf smtpd
service with `-o smtpd_milters=...`; ternd: `listen_NAME` with
`NAME.smtpd_milters = ...`), so one Postfix and one ternd serve every
milter of the module. Both have the same $myhostname (the milters' `j`
macro, so the same authserv-id), `relayhost` pointing at their sink,
`relay_domains = example.com remote.test` (XCLIENT moves the client out
of mynetworks; the tests' recipients are in those domains) and
`milter_default_action = tempfail` (a broken milter shows as 451, not as
mail that passed). ternd looks up the client's name as Postfix does
(127.0.0.1 is "localhost" for both).

What Side gives for one message, by the token in its Message-ID:
  - send(): the SMTP replies to MAIL, each RCPT and DATA or BDAT
    ("queued as ID" made "queued as QID");
  - delivered(): per sink transaction the sender, each recipient with its
    ESMTP parameters (NOTIFY=NEVER of added recipients; an ORCPT that only
    repeats the recipient left out, see _rcpt_params), and the message as
    header fields (Received: values blanked, positions kept) and body;
  - held(): the messages in the hold queue (sender, recipients), from
    `postqueue -j` and `tern queue list --json`.

Messages are found in the sink and the queue by a token in their
Message-ID (`<TOKEN@...>`).
"""

import json
import re
import smtplib
import subprocess
import time
from pathlib import Path

import harness
from fakesmtp import FakeSMTP
from pfinstance import PostfixInstance

HOSTNAME = "mx.test.example"
POSTQUEUE = "/usr/sbin/postqueue"


class ListenerPostfix(PostfixInstance):
    """A PostfixInstance with one more smtpd service per (port, milter)."""

    def __init__(self, *args, listeners=None, **kw):
        super().__init__(*args, **kw)
        self.listeners = dict(listeners or {})    # port -> smtpd_milters

    def master_cf(self):
        text = super().master_cf()
        for port, milters in sorted(self.listeners.items()):
            text += ("127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_milters=%s\n"
                     % (port, milters))
        return text


def token_of(data):
    m = re.search(rb"(?mi)^Message-ID:\s*<([^@>]+)@", data or b"")
    return m.group(1).decode() if m else None


def headers_and_body(data):
    """([field, ...] with folded lines kept as "\\n"-joined text, body)."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    out = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out, body


def normalise_fields(fields):
    """Received: values differ by MTA (names, queue IDs, dates): blanked,
    their position kept. Nothing else is touched here."""
    return ["Received: ..." if re.match(r"(?i)Received:", f) else f for f in fields]


def _params(p):
    """ESMTP parameters as a sorted tuple of "NAME=VALUE" strings."""
    if isinstance(p, dict):
        return tuple(sorted("%s=%s" % kv if kv[1] is not None else kv[0] for kv in p.items()))
    return tuple(sorted(p or ()))


def _rcpt_params(rcpt, p):
    """A recipient's parameters, less an ORCPT that only repeats the
    recipient itself ("rfc822;" + the address): Postfix's smtp client
    makes that one up from the queue file's original recipient when the
    client gave none; ternd's passes on only an ORCPT the client gave.
    That is outbound delivery, not a milter's doing, and is checked on its
    own (test_milters_ternd.py::test_orcpt_made_up_like_postfix)."""
    return tuple(x for x in _params(p) if x.upper() != "ORCPT=RFC822;" + rcpt.upper())


def queued_as(text):
    return re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", text)


class Side:
    """One MTA: its listener ports per milter, its sink, its queue."""

    def __init__(self, name, ports, sink):
        self.name = name
        self.ports = ports        # milter name -> port
        self.sink = sink

    # -- SMTP ------------------------------------------------------------------

    def send(self, milter, sender, rcpts, msg, helo="client.test", xclient=None, bdat=False,
             auth=None):
        """The replies: {"mail": (code, text), "rcpt": [...], "data": (code,
        text) or None}. bdat: the message as one BDAT LAST chunk (RFC
        3030); auth: (user, password) for AUTH PLAIN after XCLIENT."""
        out = {"mail": None, "rcpt": [], "data": None}
        with smtplib.SMTP("127.0.0.1", self.ports[milter], local_hostname=helo,
                          timeout=30) as s:
            s.ehlo(helo)
            if xclient:
                code, text = s.docmd("XCLIENT", xclient)
                assert code == 220, (self.name, code, text)
                s.ehlo(helo)
            if auth:
                s.login(*auth)
            code, text = s.mail(sender)
            out["mail"] = (code, text.decode())
            if code != 250:
                return out
            for r in rcpts:
                code, text = s.rcpt(r)
                out["rcpt"].append((code, text.decode()))
            if not any(c == 250 for c, _ in out["rcpt"]):
                return out
            if bdat:
                s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
                code, text = s.getreply()
            else:
                try:
                    code, text = s.data(msg)
                except smtplib.SMTPDataError as e:
                    code, text = e.smtp_code, e.smtp_error
            text = text.decode() if isinstance(text, bytes) else text
            out["data"] = (code, queued_as(text))
        return out

    # -- what came out -----------------------------------------------------------

    def sink_transactions(self, token):
        return [t for t in list(self.sink.transactions)
                if t.get("completed") and token_of(t.get("data")) == token]

    def delivered(self, token):
        """Sorted list of (sender, [(rcpt, params)], fields, body)."""
        out = []
        for t in self.sink_transactions(token):
            fields, body = headers_and_body(t["data"])
            rcpts = sorted((r, _rcpt_params(r, p)) for r, p in zip(t["rcpts"], t["rcpt_params"]))
            out.append((t["sender"], rcpts, normalise_fields(fields), body))
        return sorted(out, key=repr)

    def raw_delivered(self, token):
        return [t["data"] for t in self.sink_transactions(token)]


class PostfixSide(Side):
    def __init__(self, pf, ports, sink):
        super().__init__("postfix", ports, sink)
        self.pf = pf

    def queue(self):
        p = subprocess.run([POSTQUEUE, "-c", str(self.pf.conf), "-j"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    def held(self):
        return sorted((q["sender"], sorted(r["address"] for r in q["recipients"]))
                      for q in self.queue() if q["queue_name"] == "hold")

    def busy(self):
        return [q for q in self.queue() if q["queue_name"] != "hold"]

    def log(self):
        return self.pf.maillog_summary()[-4000:]


class TerndSide(Side):
    def __init__(self, cfg, program, ports, sink):
        super().__init__("ternd", ports, sink)
        self.cfg = cfg
        self.program = program

    def queue(self):
        rc, out, err = harness.run_tern("queue", "list", "--json", config_dir=self.cfg)
        assert rc == 0, err
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def held(self):
        return sorted((q["sender"], sorted(r["address"] for r in q["recipients"]))
                      for q in self.queue() if q["queue_name"] == "hold")

    def busy(self):
        return [q for q in self.queue() if q["queue_name"] != "hold"]

    def log(self):
        p = Path(self.cfg.maillog_file)
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""


def wait_idle(sides, timeout=20.0):
    """Until no side has a message in its queue but on hold."""
    deadline = time.monotonic() + timeout
    while True:
        busy = {s.name: s.busy() for s in sides}
        if not any(busy.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError("queues not empty: %r\n%s" % (
                busy, "\n".join("--- %s ---\n%s" % (s.name, s.log()) for s in sides)))
        time.sleep(0.1)


class World:
    """The milters' programs are started by the caller (start(argv, ready,
    name)); start_mtas() then brings up the two MTAs for {milter name:
    milter endpoint}."""

    def __init__(self, base, start):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        harness.traversable(self.base)
        self.start = start
        self.pf = None
        self.sinks = []

    def start_mtas(self, milters, extra=None):
        """extra: more settings, the same for both MTAs."""
        pf_sink = FakeSMTP("127.0.0.1", harness.free_port()).start()
        tern_sink = FakeSMTP("127.0.0.1", harness.free_port()).start()
        self.sinks = [pf_sink, tern_sink]
        pf_ports = {name: harness.free_port() for name in milters}
        common = {"relay_domains": "example.com remote.test",
                  "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
                  "milter_default_action": "tempfail",
                  "milter_protocol": "6",
                  "mydestination": "",
                  "smtpd_client_connection_count_limit": "0",
                  "smtpd_client_connection_rate_limit": "0"}
        common.update(extra or {})
        pf_main = dict(common, relayhost="[127.0.0.1]:%d" % pf_sink.port)
        self.pf = ListenerPostfix(self.base / "postfix", harness.free_port(),
                                  myhostname=HOSTNAME, mailboxes={}, main=pf_main,
                                  listeners={pf_ports[n]: ep for n, ep in milters.items()})
        self.pf.start()
        cfg = harness.ConfigDir(self.base / "ternd", myhostname=HOSTNAME)
        cfg.set(relayhost="[127.0.0.1]:%d" % tern_sink.port, alias_maps="",
                local_recipient_maps="", **common)
        tern_ports = {}
        for name, ep in milters.items():
            tern_ports[name] = harness.free_port()
            cfg.set("listen_%s" % name, "127.0.0.1:%d" % tern_ports[name])
            cfg.set("%s.smtpd_milters" % name, ep)
        program = self.start([harness.tern_bin("ternd"), "-f", "-c", str(cfg.path)],
                             ready=list(tern_ports.values()), name="ternd")
        self.postfix = PostfixSide(self.pf, pf_ports, pf_sink)
        self.ternd = TerndSide(cfg, program, tern_ports, tern_sink)
        return self

    @property
    def sides(self):
        return [self.postfix, self.ternd]

    def stop(self):
        if self.pf:
            self.pf.stop()
        for s in self.sinks:
            s.stop()
