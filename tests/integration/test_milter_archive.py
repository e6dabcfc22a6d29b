"""test_milter_archive.py - tern-archive-milter under a real Postfix 3.7.

Seed 002's "archive when the sender or a recipient is outside example.com"
written as one pcre table used for both the sender and the recipients,
checked for every combination of local/remote sender and recipients by
looking at the archive mailbox; plus the trace header, no duplicate copy
when the archive is already a recipient, SASL/client maps, and a reload on
SIGUSR1.
"""

import itertools
import re
import signal
import time

import pytest

from milterworld import milter_world  # noqa: F401  (fixture)

ARCHIVE = "archive@example.com"
MAILBOXES = {a: "%s/%s/" % (a.split("@")[1], a.split("@")[0]) for a in (
    "alice@example.com", "bob@example.com", ARCHIVE, "carol@remote.test", "dave@remote.test")}

CHECK = "!/@example\\.com$/ %s\n" % ARCHIVE
CONF = """user = tern
archive_sender_maps = pcre:${config_dir}/archive-check
archive_recipient_maps = pcre:${config_dir}/archive-check
archive_header = X-Tern-Archived
"""


def message(subject, sender="alice@example.com"):
    return ("From: %s\r\nTo: someone\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n"
            "body of %s\r\n" % (sender, subject, subject.replace(" ", "."), subject)).encode()


def conf(extra=""):
    # ${config_dir} is not a parameter here: the table path is written out.
    return CONF + extra


@pytest.fixture
def world(milter_world, tmp_path):
    def make(extra="", mailboxes=MAILBOXES):
        d = tmp_path / "archive"
        text = conf(extra).replace("${config_dir}", str(d))
        return milter_world("archive", text, mailboxes, files={"archive-check": CHECK})
    return make


def subjects(msgs):
    return sorted(m["Subject"] for m in msgs)


def test_seed_002_every_combination(world):
    w = world()
    senders = ["alice@example.com", "carol@remote.test"]
    rcpt_sets = [["bob@example.com"], ["dave@remote.test"], ["bob@example.com", "dave@remote.test"]]
    expected, per_box = [], {}
    for sender, rcpts in itertools.product(senders, rcpt_sets):
        subject = "from %s to %s" % (sender, " ".join(rcpts))
        code, text = w.send(sender, rcpts, message(subject, sender))
        assert code == 250, (code, text, w.log())
        outside = not sender.endswith("@example.com") or any(
            not r.endswith("@example.com") for r in rcpts)
        if outside:
            expected.append(subject)
        for r in rcpts:
            per_box[r] = per_box.get(r, 0) + 1
    for r, n in per_box.items():
        w.wait_mail(r, n)
    got = w.wait_mail(ARCHIVE, len(expected))
    time.sleep(1.0)                 # nothing more may arrive
    got = w.wait_mail(ARCHIVE, len(expected))
    assert subjects(got) == sorted(expected), w.log()
    # The only local-only message (alice -> bob) was not archived; the
    # archive copy carries the trace header, the recipients' copies too.
    for m in got:
        assert m["X-Tern-Archived"] == "<%s>" % ARCHIVE
    log = w.log()
    assert re.search(r"tern/archive-milter\[\d+\]: [0-9A-F]+: archive: to=<archive@example.com>, "
                     r"reason=sender <carol@remote.test>", log), log
    assert re.search(r": archive: to=<archive@example.com>, reason=recipient <dave@remote.test>",
                     log), log


def test_null_sender_and_archive_already_a_recipient(world):
    w = world()
    # <> is looked up as "<>": not @example.com -> archived
    code, _ = w.send("", ["bob@example.com"], message("bounce"))
    assert code == 250
    # The archive is a recipient already: no second copy.
    code, _ = w.send("carol@remote.test", ["bob@example.com", ARCHIVE], message("cc archive"))
    assert code == 250
    w.wait_mail("bob@example.com", 2)
    got = w.wait_mail(ARCHIVE, 2)
    time.sleep(1.0)
    got = w.wait_mail(ARCHIVE, 2)
    assert subjects(got) == ["bounce", "cc archive"]
    assert "archive: <archive@example.com> already a recipient" in w.log()


def test_client_and_sasl_maps_and_reload(world, tmp_path):
    # Only the client map: every client on loopback is archived to
    # bob; then a reload (SIGUSR1) switches to the sender map only.
    w = world(extra="archive_sender_maps =\narchive_recipient_maps =\n"
              "archive_client_maps = cidr:{ {127.0.0.0/8 bob@example.com} }\n")
    code, _ = w.send("alice@example.com", ["carol@remote.test"], message("client one"))
    assert code == 250
    got = w.wait_mail("bob@example.com", 1)
    assert subjects(got) == ["client one"]
    assert re.search(r"reason=client <127\.0\.0\.1>", w.log())
    # A broken config is refused and the running one kept.
    good = w.conf_path.read_text()
    w.conf_path.write_text(good + "archive_notify = SOMETIMES\n")
    w.milter.signal(signal.SIGUSR1)
    w.milter.wait_log("reload refused")
    code, _ = w.send("alice@example.com", ["carol@remote.test"], message("client two"))
    assert code == 250
    w.wait_mail("bob@example.com", 2)
    # Now a valid new config.
    w.conf_path.write_text(good.replace("archive_sender_maps =\n", "archive_sender_maps = "
                                        "pcre:%s/archive/archive-check\n" % tmp_path)
                           .replace("archive_client_maps", "#archive_client_maps"))
    w.milter.signal(signal.SIGUSR1)
    w.milter.wait_log("reload -- configuration")
    code, _ = w.send("carol@remote.test", ["dave@remote.test"], message("after reload"))
    assert code == 250
    got = w.wait_mail(ARCHIVE, 1)
    assert subjects(got) == ["after reload"]
    assert len(w.messages("bob@example.com")) == 2


def test_lookup_failure_tempfails(world, tmp_path):
    # A table whose file is missing fails every lookup: the message is
    # tempfailed rather than passed without its archive copy.
    w = world(extra="archive_recipient_maps = pcre:%s/no-such-file\n" % tmp_path)
    code, text = w.send("alice@example.com", ["bob@example.com"], message("no table"))
    assert code == 451 and "4.3.0" in text, (code, text)
    assert "archive lookup failed" in w.log()
