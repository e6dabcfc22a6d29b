"""pfmaster.py - master.cf for a private Postfix instance on this machine
(the interop tests' pfinstance.py and tests/bench/bench.py): Debian's
/etc/postfix/master.cf with the smtp listener moved to 127.0.0.1:PORT,
chroot off (the instance's queue is not a chroot jail) and the pipe
services dropped (their users need not exist). Standard library only.
"""

MASTER_CF = "/etc/postfix/master.cf"
PIPE_SERVICES = {"maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman"}


def private_master_cf(port, path=MASTER_CF):
    """The rewritten master.cf text; ValueError if it has no smtp inet service."""
    out, skipping, moved = [], False, False
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                out.append(line)
                continue
            if line[0].isspace():  # continues the entry above
                if not skipping:
                    out.append(line)
                continue
            fields = line.split()
            skipping = fields[0] in PIPE_SERVICES
            if skipping:
                continue
            if len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = "127.0.0.1:%d" % port
                    moved = True
                if fields[4] == "y":
                    fields[4] = "n"
                line = "%-10s %-5s %-7s %-7s %-7s %-7s %-7s %s\n" % (
                    fields[0], fields[1], fields[2], fields[3], fields[4],
                    fields[5], fields[6], " ".join(fields[7:]))
            out.append(line)
    if not moved:
        raise ValueError("%s has no 'smtp inet' service to move" % path)
    return "".join(out)
