"""milterclient.py - a small MTA side of the milter protocol (v6), for
driving Tern's milters directly where a real MTA cannot misbehave on
demand: a session cut off mid-message, a megabyte header, ten thousand
recipients, bytes that are not UTF-8.

Packets are a 4-byte big-endian length, a command byte and data
(milter-policy-ecosystem.md §1). The client offers every action and
protocol step, as Postfix does, and then honours what the milter took:
events it asked not to get (SMFIP_NO*) are not sent, and no reply is read
for the ones it will not answer (SMFIP_NR_*).
"""

import socket
import struct

SMFIP = {"NOCONNECT": 0x1, "NOHELO": 0x2, "NOMAIL": 0x4, "NORCPT": 0x8, "NOBODY": 0x10,
         "NOHDRS": 0x20, "NOEOH": 0x40, "NR_HDR": 0x80, "NODATA": 0x200, "SKIP": 0x400,
         "NR_CONN": 0x1000, "NR_HELO": 0x2000, "NR_MAIL": 0x4000, "NR_RCPT": 0x8000,
         "NR_DATA": 0x10000, "NR_EOH": 0x40000, "NR_BODY": 0x80000, "HDR_LEADSPC": 0x100000}
FINAL = set(b"cartdy4s")


class MilterClient:
    def __init__(self, port, timeout=30, actions=0x1ff, steps=0x1fffff):
        if isinstance(port, int):
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            # A macro packet and its command go out back to back: without
            # NODELAY, Nagle holds the second until the first is ACKed (40 ms).
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:                                   # a unix socket's path
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(port))
        self.send(b"O", struct.pack("!III", 6, actions, steps))
        cmd, data = self.recv()
        assert cmd == b"O", (cmd, data)
        self.version, self.actions, self.proto = struct.unpack("!III", data[:12])
        self.skipped = False

    def close(self):
        self.sock.close()

    def send(self, cmd, data=b""):
        self.sock.sendall(struct.pack("!I", len(data) + 1) + cmd + data)

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("milter closed the connection")
            out += chunk
        return out

    def recv(self):
        (n,) = struct.unpack("!I", self._read(4))
        data = self._read(n)
        return data[:1], data[1:]

    def _event(self, cmd, data, no=None, nr=None):
        if no and self.proto & SMFIP[no]:
            return None
        self.send(cmd, data)
        if nr and self.proto & SMFIP[nr]:
            return None
        return self.recv()

    def macros(self, stage, **kv):
        if not kv:
            return
        data = stage + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in kv.items())
        self.send(b"D", data)

    def connect(self, host="client.test", addr="192.0.2.1", port=40000, **macros):
        self.macros(b"C", **macros)
        return self._event(b"C", host.encode() + b"\0" + b"4" + struct.pack("!H", port)
                           + addr.encode() + b"\0", "NOCONNECT", "NR_CONN")

    def helo(self, name="client.test"):
        return self._event(b"H", name.encode() + b"\0", "NOHELO", "NR_HELO")

    def mail(self, sender, **macros):
        self.macros(b"M", **macros)
        return self._event(b"M", b"<" + sender.encode() + b">\0", "NOMAIL", "NR_MAIL")

    def rcpt(self, rcpt):
        return self._event(b"R", b"<" + rcpt.encode() + b">\0", "NORCPT", "NR_RCPT")

    def header(self, name, value):
        """value as bytes or str, as the MTA would send it (with the leading
        space when HDR_LEADSPC was negotiated)."""
        if isinstance(value, str):
            value = value.encode()
        if self.proto & SMFIP["HDR_LEADSPC"]:
            value = b" " + value
        return self._event(b"L", name.encode() + b"\0" + value + b"\0", "NOHDRS", "NR_HDR")

    def eoh(self):
        return self._event(b"N", b"", "NOEOH", "NR_EOH")

    def body(self, data):
        """Chunks of at most 65535 bytes; stops after a SKIP reply."""
        reply = None
        for i in range(0, len(data), 65535):
            if self.skipped:
                break
            reply = self._event(b"B", data[i:i + 65535], "NOBODY", "NR_BODY")
            if reply and reply[0] == b"s":
                self.skipped = True
        return reply

    def eom(self, **macros):
        """End of message: returns (modifications, final reply)."""
        self.macros(b"E", **macros)
        self.send(b"E")
        mods = []
        while True:
            cmd, data = self.recv()
            if cmd[0] in FINAL:
                return mods, (cmd, data)
            mods.append((cmd, data))

    def abort(self):
        self.send(b"A")

    def message(self, sender, rcpts, headers, body, qid="ABC123"):
        """A whole transaction after connect/helo: (mods, final) or the
        first refusal as ([], reply)."""
        r = self.mail(sender)
        if r and r[0] != b"c":
            return [], r
        for rc in rcpts:
            self.rcpt(rc)
        for name, value in headers:
            r = self.header(name, value)
            if r and r[0] not in (b"c",):
                return [], r
        self.macros(b"N", i=qid)
        r = self.eoh()
        if r and r[0] != b"c":
            return [], r
        r = self.body(body)
        if r and r[0] not in (b"c", b"s"):
            return [], r
        return self.eom(i=qid)
