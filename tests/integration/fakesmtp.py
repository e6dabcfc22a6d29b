"""fakesmtp.py - a small threaded SMTP/LMTP server that plays the remote
side in the outbound delivery tests (test_outbound.py).

It listens on a loopback TCP address (any 127.x.y.z, so that several
"MX hosts" can share one port) or on a unix socket, answers each command
as configured, and records everything: connections (peer, EHLO/LHLO
name, commands, timing), transactions (MAIL FROM with parameters, every
RCPT with its parameters and the reply given, the message content with
dot-stuffing undone) and the messages it accepted. Only the standard
library is used.

    with FakeSMTP("127.0.0.2", port, rcpt_reply={"bad@x.test": "550 5.1.1 no"}) as fake:
        ...
        fake.wait_messages(1)
        fake.messages[0]["rcpts"], fake.messages[0]["data"]

Replies
    Every *_reply setting is a reply string ("250 2.1.5 Ok"; lines
    separated by "\\n" make a multi-line reply, each line starting with
    the code), a dict (looked up by address, falling back to the
    default reply), or a callable returning the reply string:
      mail_reply(sender, params)      default "250 2.1.0 Ok"
      rcpt_reply(addr)                default "250 2.1.5 Ok"
      data_reply(txn)   (SMTP)        default "250 2.0.0 Ok: queued as FAKEn"
      data_reply(addr)  (LMTP)        one reply per accepted recipient,
                                      default "250 2.0.0 <addr> Ok: queued as FAKEn"
    txn is the transaction dict (see below) with the content in "data".

Scripted connections
    fail_first_n_connections=N with fail_mode "421" (greet with
    fail_reply, answer QUIT, close), "reset" (close at once with a TCP
    reset, no greeting) or "close" (close at once, no greeting).
    greeting may also be a callable(index) returning the greeting or None
    (None = reset the connection).

Pipelining
    Commands are read line by line from a buffered reader and answered
    one by one in order, so a client may send MAIL, RCPTs and DATA in one
    write (RFC 2920). Every reply is written with one send().

Delays
    delay_seconds is slept before each reply whose stage is in delay_on:
    "GREETING", "EHLO" (EHLO/HELO/LHLO), "MAIL", "RCPT", "DATA" (the 354)
    and "DOT" (the reply to the end of the message, the default).

Records (all lists only grow; read them while the server runs or after)
    .connections   dicts: index, peer, local, opened, closed, helo,
                   commands (lines received), failed (scripted failure or
                   None), transactions (indexes into .transactions)
    .transactions  every transaction that got a 2xx MAIL reply: conn,
                   helo, local, sender, mail_params, rcpts_tried
                   [(addr, params, reply)], rcpts and rcpt_params (the
                   accepted ones, in order), data (bytes, CRLF lines,
                   None if DATA never completed), data_reply (SMTP str;
                   LMTP list of (addr, reply)), delivered (addresses whose
                   final reply was 2xx), completed (True once DATA was
                   answered)
    .messages      the transactions in which at least one recipient was
                   delivered
    .max_concurrent           most connections in use at once; a
                   connection is in use from accept() to the last reply it
                   was sent other than to RSET/NOOP/QUIT, so a client that
                   sends QUIT and connects again at once is not counted
                   twice, while an idle connection that is used again later
                   counts throughout
    .max_open                 most connections open at once (as seen by
                   this server: racy when the client closes and reconnects)
    .max_concurrent_transactions  most transactions between MAIL and the
                   reply to the end of DATA at once
"""

import os
import socket
import struct
import threading
import time

DEFAULT_EHLO_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                         "SIZE 10240000", "DSN", "SMTPUTF8")

# Stages whose replies extend a connection's "in use" interval.
_BUSY_STAGES = {"GREETING", "EHLO", "MAIL", "RCPT", "DATA", "DOT"}


def _parse_path(arg):
    """Split "<addr> PARAM=V ..." (what follows FROM: / TO:) into
    (addr, {PARAM: V or None}); None when there are no angle brackets."""
    arg = arg.strip()
    if not arg.startswith("<"):
        return None
    end = arg.find(">")
    if end < 0:
        return None
    addr = arg[1:end]
    params = {}
    for word in arg[end + 1:].split():
        key, eq, value = word.partition("=")
        params[key.upper()] = value if eq else None
    return addr, params


def _interval_max(intervals):
    """Most intervals (start, end) that overlap at one instant."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    # At equal times count the end first: an interval ending exactly when
    # another starts does not overlap it.
    events.sort(key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


class FakeSMTP:
    def __init__(self, host="127.0.0.1", port=0, lmtp=False, unix_path=None,
                 ehlo_keywords=DEFAULT_EHLO_KEYWORDS, hostname="fake",
                 greeting=None, mail_reply="250 2.1.0 Ok", rcpt_reply="250 2.1.5 Ok",
                 data_reply=None, fail_first_n_connections=0, fail_mode="421",
                 fail_reply="421 4.3.2 fake: service not available, closing channel",
                 delay_seconds=0.0, delay_on=("DOT",), timeout=30.0,
                 tls=None, starttls_reply="220 2.0.0 Ready to start TLS", starttls_inject=None,
                 auth=None, auth_mechanisms="PLAIN LOGIN",
                 auth_reply_ok="235 2.7.0 Authentication successful"):
        if fail_mode not in ("421", "reset", "close"):
            raise ValueError("fail_mode must be '421', 'reset' or 'close'")
        self.host, self.port, self.lmtp, self.unix_path = host, port, lmtp, unix_path
        self.ehlo_keywords = tuple(ehlo_keywords)
        self.hostname = hostname
        self.greeting = greeting if greeting is not None else (
            "220 %s %s" % (hostname, "LMTP" if lmtp else "ESMTP"))
        self.mail_reply, self.rcpt_reply, self.data_reply = mail_reply, rcpt_reply, data_reply
        self.fail_first_n_connections, self.fail_mode = fail_first_n_connections, fail_mode
        self.fail_reply = fail_reply
        self.delay_seconds, self.delay_on = delay_seconds, set(delay_on)
        self.timeout = timeout
        # TLS: an ssl.SSLContext (server side) makes the server offer
        # STARTTLS; starttls_inject is sent right after the 220, in the
        # same write (a man in the middle answering in advance). auth: a
        # {user: password} dict; AUTH PLAIN LOGIN is offered (after TLS
        # when tls is set; auth_mechanisms says which). Records: connection "tls" (version, cipher)
        # and "auth" (the user that authenticated).
        self.tls, self.starttls_reply, self.starttls_inject = tls, starttls_reply, starttls_inject
        self.auth, self.auth_reply_ok = auth, auth_reply_ok
        self.auth_mechanisms = auth_mechanisms

        self.connections = []
        self.transactions = []
        self.messages = []
        self.errors = []             # exceptions in handler threads (a bug here)
        self._lock = threading.Lock()
        self._queued = 0
        self._open = 0
        self.max_open = 0
        self._conn_spans = []        # [opened, last_busy_reply] per connection
        self._txn_spans = []         # [mail, end] per transaction
        self._socks = set()
        self._threads = []
        self._listener = None
        self._accept_thread = None
        self._stopping = threading.Event()

    # --- life cycle -------------------------------------------------------

    @property
    def address(self):
        """What a client connects to: (host, port) or the socket path."""
        return self.unix_path if self.unix_path else (self.host, self.port)

    def start(self):
        if self.unix_path:
            self.port = None
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(self.unix_path))
            os.chmod(str(self.unix_path), 0o666)   # the tern user must connect
        else:
            s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                              socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
            self.port = s.getsockname()[1]
        s.listen(128)
        s.settimeout(0.1)
        self._listener = s
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="fakesmtp-accept")
        self._accept_thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            if self.unix_path:
                try:
                    os.unlink(str(self.unix_path))
                except OSError:
                    pass
        with self._lock:
            socks = list(self._socks)
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- statistics and waiting -----------------------------------------

    @property
    def max_concurrent(self):
        with self._lock:
            return _interval_max([tuple(s) for s in self._conn_spans])

    @property
    def max_concurrent_transactions(self):
        now = time.monotonic()
        with self._lock:
            return _interval_max([(a, b if b is not None else now) for a, b in self._txn_spans])

    def delivered(self):
        """Every address delivered, in order (one entry per delivery)."""
        with self._lock:
            return [a for m in self.messages for a in m["delivered"]]

    def describe(self):
        """A transcript of every connection, for assertion messages."""
        with self._lock:
            out = ["fake %s%s: %d connection(s), %d transaction(s), %d message(s)" % (
                self.address, " (LMTP)" if self.lmtp else "", len(self.connections),
                len(self.transactions), len(self.messages))]
            for c in self.connections:
                scripted = ", scripted %s" % c["failed"] if c["failed"] else ""
                out.append("  conn %d from %s%s:" % (c["index"], c["peer"], scripted))
                out += ["    " + line for line in c["log"]]
        return "\n".join(out)

    def wait(self, predicate, timeout=10.0, what="condition"):
        """Poll predicate() until true (returned); AssertionError with the
        transcript on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %s\n%s" % (
                    timeout, what, self.describe()))
            time.sleep(0.05)

    def wait_messages(self, n, timeout=10.0):
        """Wait until at least n messages were accepted; returns them."""
        self.wait(lambda: len(self.messages) >= n, timeout,
                  "%d message(s) at %s" % (n, self.address))
        return list(self.messages)

    # --- server -----------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            now = time.monotonic()
            with self._lock:
                index = len(self.connections)
                span = [now, now]
                self._conn_spans.append(span)
                self._open += 1
                self.max_open = max(self.max_open, self._open)
                try:
                    local = conn.getsockname()
                except OSError:
                    local = None
                rec = {"index": index, "peer": peer, "local": local, "opened": now,
                       "closed": None, "helo": None, "commands": [], "log": [],
                       "failed": None, "transactions": [], "tls": None, "auth": None}
                self.connections.append(rec)
                self._socks.add(conn)
            t = threading.Thread(target=self._serve, args=(conn, rec, span), daemon=True,
                                 name="fakesmtp-conn-%d" % index)
            self._threads.append(t)
            t.start()

    def _serve(self, conn, rec, span):
        try:
            conn.settimeout(self.timeout)
            _Session(self, conn, rec, span).run()
        except (OSError, ValueError):
            pass                                  # client went away
        except Exception as e:  # noqa: BLE001 - a bug in the fake: keep it visible
            self.errors.append(repr(e))
            rec["log"].append("!! fake error: %r" % e)
        finally:
            with self._lock:
                self._open -= 1
                rec["closed"] = time.monotonic()
                self._socks.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    # --- reply selection -------------------------------------------------

    def _pick(self, setting, key, default, *args):
        if setting is None:
            return default
        if callable(setting):
            return setting(*args)
        if isinstance(setting, dict):
            return setting.get(key, default)
        return setting

    def _next_queue_id(self):
        with self._lock:
            self._queued += 1
            return "FAKE%d" % self._queued


class _Session:
    """One connection: reads commands line by line and answers in order."""

    def __init__(self, server, conn, rec, span):
        self.s, self.conn, self.rec, self.span = server, conn, rec, span
        self.f = conn.makefile("rb")
        self.txn = None
        self.txn_span = None
        self.greeting = None

    def log(self, line):
        self.rec["log"].append(line)

    def send(self, reply, stage, delay=True):
        if delay and self.s.delay_seconds and stage in self.s.delay_on:
            time.sleep(self.s.delay_seconds)
        lines = str(reply).split("\n")
        wire = []
        for i, line in enumerate(lines):
            line = line.rstrip("\r")
            if i < len(lines) - 1 and len(line) >= 3:
                line = line[:3] + "-" + line[4:]
            wire.append(line)
            self.log("<<< " + line)
        if stage in _BUSY_STAGES:
            with self.s._lock:
                self.span[1] = time.monotonic()   # before the client can see it
        if stage == "DOT" and self.txn_span is not None:
            with self.s._lock:
                self.txn_span[1] = time.monotonic()
        self.conn.sendall(("\r\n".join(wire) + "\r\n").encode("utf-8", "surrogateescape"))

    def readline(self):
        line = self.f.readline(65536)
        if not line:
            return None
        return line.decode("utf-8", "surrogateescape").rstrip("\r\n")

    def scripted_failure(self):
        s, index = self.s, self.rec["index"]
        if callable(s.greeting):
            greeting = s.greeting(index)
            if greeting is None:
                self.rec["failed"] = "reset"
                self.reset()
                return True
            self.greeting = greeting
            return False
        if index >= s.fail_first_n_connections:
            return False
        self.rec["failed"] = s.fail_mode
        if s.fail_mode == "reset":
            self.reset()
        elif s.fail_mode == "close":
            self.log("(closed without greeting)")
        else:
            self.send(s.fail_reply, "GREETING")
            self.conn.settimeout(2.0)
            try:
                line = self.readline()
                if line is not None:
                    self.log(">>> " + line)
                    self.rec["commands"].append(line)
                    if line.upper() == "QUIT":
                        self.send("221 2.0.0 Bye", "QUIT")
            except OSError:
                pass
        return True

    def reset(self):
        self.log("(reset)")
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def run(self):
        try:
            self.dialogue()
        finally:
            self.abort_txn()

    def dialogue(self):
        s = self.s
        if self.scripted_failure():
            return
        self.send(self.greeting if callable(s.greeting) else s.greeting, "GREETING")
        while True:
            line = self.readline()
            if line is None:
                self.log("(client closed the connection)")
                return
            self.log(">>> " + line)
            self.rec["commands"].append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "cmd_" + verb, None)
            if handler is None:
                self.send("502 5.5.2 Error: command not recognized", "OTHER")
                continue
            if handler(arg) == "quit":
                return

    # --- commands ---------------------------------------------------------

    def _hello(self, arg, extended):
        self.rec["helo"] = arg.strip()
        self.abort_txn()
        if not extended:
            self.send("250 %s" % self.s.hostname, "EHLO")
            return
        keywords = list(self.s.ehlo_keywords)
        if self.s.tls is not None and self.rec["tls"] is None:
            keywords.append("STARTTLS")
        if self.s.auth is not None and (self.s.tls is None or self.rec["tls"] is not None):
            keywords.append("AUTH " + self.s.auth_mechanisms)
        lines = ["250 %s" % self.s.hostname] + ["250 %s" % k for k in keywords]
        self.send("\n".join(lines), "EHLO")

    def cmd_EHLO(self, arg):
        if self.s.lmtp:
            self.send("500 5.5.1 Error: LMTP server: use LHLO", "OTHER")
        else:
            self._hello(arg, True)

    def cmd_HELO(self, arg):
        if self.s.lmtp:
            self.send("500 5.5.1 Error: LMTP server: use LHLO", "OTHER")
        else:
            self._hello(arg, False)

    def cmd_LHLO(self, arg):
        if not self.s.lmtp:
            self.send("502 5.5.2 Error: command not recognized", "OTHER")
        else:
            self._hello(arg, True)

    def cmd_MAIL(self, arg):
        if self.txn is not None:
            self.send("503 5.5.1 Error: nested MAIL command", "MAIL")
            return
        if not arg.upper().startswith("FROM:"):
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>", "MAIL")
            return
        parsed = _parse_path(arg[5:])
        if parsed is None:
            self.send("501 5.1.7 Bad sender address syntax", "MAIL")
            return
        sender, params = parsed
        reply = self.s._pick(self.s.mail_reply, sender, "250 2.1.0 Ok", sender, params)
        if reply.startswith("2"):
            txn = {"conn": self.rec["index"], "helo": self.rec["helo"], "local": self.rec["local"],
                   "sender": sender, "mail_params": params, "rcpts_tried": [], "rcpts": [],
                   "rcpt_params": [], "data": None, "data_reply": None, "delivered": [],
                   "completed": False}
            with self.s._lock:
                self.rec["transactions"].append(len(self.s.transactions))
                self.s.transactions.append(txn)
                self.txn_span = [time.monotonic(), None]
                self.s._txn_spans.append(self.txn_span)
            self.txn = txn
        self.send(reply, "MAIL")

    def cmd_RCPT(self, arg):
        if self.txn is None:
            self.send("503 5.5.1 Error: need MAIL command", "RCPT")
            return
        if not arg.upper().startswith("TO:"):
            self.send("501 5.5.4 Syntax: RCPT TO:<address>", "RCPT")
            return
        parsed = _parse_path(arg[3:])
        if parsed is None:
            self.send("501 5.1.3 Bad recipient address syntax", "RCPT")
            return
        addr, params = parsed
        reply = self.s._pick(self.s.rcpt_reply, addr, "250 2.1.5 Ok", addr)
        with self.s._lock:
            self.txn["rcpts_tried"].append((addr, params, reply))
            if reply.startswith("2"):
                self.txn["rcpts"].append(addr)
                self.txn["rcpt_params"].append(params)
        self.send(reply, "RCPT")

    def cmd_DATA(self, arg):
        if self.txn is None:
            self.send("503 5.5.1 Error: need MAIL command", "DATA")
            return
        if not self.txn["rcpts"]:
            self.send("554 5.5.1 Error: no valid recipients" if self.txn["rcpts_tried"]
                      else "503 5.5.1 Error: need RCPT command", "DATA")
            return
        self.send("354 End data with <CR><LF>.<CR><LF>", "DATA")
        chunks = []
        while True:
            raw = self.f.readline(1 << 20)
            if not raw:
                self.log("(connection lost in DATA)")
                raise ConnectionError("connection lost in DATA")
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]                      # RFC 5321 §4.5.2
            chunks.append(raw)
        data = b"".join(chunks)
        txn = self.txn
        self.log("(%d bytes of message content)" % len(data))
        with self.s._lock:
            txn["data"] = data
        if self.s.lmtp:
            replies = []
            for addr in txn["rcpts"]:
                default = "250 2.0.0 <%s> Ok: queued as %s" % (addr, self.s._next_queue_id())
                replies.append((addr, self.s._pick(self.s.data_reply, addr, default, addr)))
            with self.s._lock:
                txn["data_reply"] = replies
                txn["delivered"] = [a for a, r in replies if r.startswith("2")]
                txn["completed"] = True
                if txn["delivered"]:
                    self.s.messages.append(txn)
            self.txn = None
            if self.s.delay_seconds and "DOT" in self.s.delay_on:
                time.sleep(self.s.delay_seconds)
            for i, (_, reply) in enumerate(replies):
                # The transaction ends (and the connection's use is
                # stamped) with the last of the per-recipient replies.
                self.send(reply, "DOT" if i == len(replies) - 1 else "LMTPDATA", delay=False)
        else:
            default = "250 2.0.0 Ok: queued as %s" % self.s._next_queue_id()
            setting = None if isinstance(self.s.data_reply, dict) else self.s.data_reply
            reply = self.s._pick(setting, None, default, txn)
            with self.s._lock:
                txn["data_reply"] = reply
                txn["completed"] = True
                if reply.startswith("2"):
                    txn["delivered"] = list(txn["rcpts"])
                    self.s.messages.append(txn)
            self.txn = None
            self.send(reply, "DOT")
        self.txn_span = None

    def abort_txn(self):
        if self.txn is not None and self.txn_span is not None:
            with self.s._lock:
                self.txn_span[1] = time.monotonic()
        self.txn, self.txn_span = None, None

    def cmd_STARTTLS(self, arg):
        if self.s.tls is None or self.rec["tls"] is not None:
            self.send("502 5.5.1 Error: command not implemented", "OTHER")
            return None
        wire = (self.s.starttls_reply + "\r\n").encode()
        if self.s.starttls_inject:
            wire += self.s.starttls_inject.encode()
        self.log("<<< " + self.s.starttls_reply)
        self.conn.sendall(wire)
        if self.s.starttls_reply[0] != "2":
            return None
        try:
            self.conn = self.s.tls.wrap_socket(self.conn, server_side=True)
        except (OSError, ValueError) as e:
            self.log("(TLS handshake failed: %s)" % e)
            return "quit"
        self.f = self.conn.makefile("rb")
        self.rec["tls"] = (self.conn.version(), self.conn.cipher()[0])
        self.rec["helo"] = None
        self.abort_txn()
        return None

    def cmd_AUTH(self, arg):
        import base64
        mech, _, initial = arg.partition(" ")
        if self.s.auth is None or (self.s.tls is not None and self.rec["tls"] is None):
            self.send("503 5.5.1 Error: authentication not enabled", "OTHER")
            return None

        def ask(prompt):
            self.send("334 " + prompt, "OTHER")
            line = self.readline()
            return base64.b64decode(line or "")

        try:
            if mech.upper() == "PLAIN":
                blob = base64.b64decode(initial) if initial else ask("")
                _authz, user, password = blob.decode().split("\0")
            elif mech.upper() == "LOGIN":
                user = ask("VXNlcm5hbWU6").decode()
                password = ask("UGFzc3dvcmQ6").decode()
            else:
                self.send("535 5.7.8 Error: authentication failed: mechanism unknown", "OTHER")
                return None
        except ValueError:
            self.send("501 5.5.2 Cannot decode response", "OTHER")
            return None
        if self.s.auth.get(user) == password:
            self.rec["auth"] = user
            self.send(self.s.auth_reply_ok, "OTHER")
        else:
            self.send("535 5.7.8 Error: authentication failed: bad credentials", "OTHER")
        return None

    def cmd_RSET(self, arg):
        self.abort_txn()
        self.send("250 2.0.0 Ok", "RSET")

    def cmd_NOOP(self, arg):
        self.send("250 2.0.0 Ok", "NOOP")

    def cmd_QUIT(self, arg):
        self.abort_txn()
        self.send("221 2.0.0 Bye", "QUIT")
        return "quit"
