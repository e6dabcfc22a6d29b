"""test_content_filter.py - after-queue content filtering: the FILTER
access action (transport:destination for that message) and the
content_filter parameter (every message), as Postfix routes them: all
recipients of the message go to the filter's next hop instead of their
own routes; the filter is recorded in the queue, so it survives a
restart. The filter here is a fake SMTP server."""

import harness
from fakesmtp import FakeSMTP
from restr_util import session, start_ternd, wait_log


def send(port, sender, rcpts, subject="x"):
    s = session(port)
    assert s.cmd("MAIL FROM:<%s>" % sender) == "250 2.1.0 Ok"
    for r in rcpts:
        assert s.cmd("RCPT TO:<%s>" % r) == "250 2.1.5 Ok"
    reply = s.message("Subject: %s\r\n\r\nbody\r\n" % subject)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    s.close()
    return reply.split()[-1]


def test_filter_action_routes_the_message_to_the_filter(config_dir, start_program):
    fport = harness.free_port()
    with FakeSMTP("127.0.0.1", fport) as filt:
        table = config_dir.write_table(
            "sender_access", "scan@example.org FILTER smtp:[127.0.0.1]:%d\n" % fport)
        port = start_ternd(config_dir, start_program,
                           smtpd_sender_restrictions="check_sender_access texthash:%s" % table)
        qid = send(port, "scan@example.org", ["joe@example.test", "alice@example.test"])
        send(port, "plain@example.org", ["joe@example.test"])
        harness.wait_for(lambda: len(filt.messages) >= 1, what="the filtered message")
        assert sorted(filt.messages[0]["rcpts"]) == ["alice@example.test", "joe@example.test"]
        wait_log(config_dir, r"NOQUEUE: filter: RCPT from \S+: <scan@example\.org>: Sender "
                             r"address triggers FILTER smtp:\[127\.0\.0\.1\]:%d" % fport)
        wait_log(config_dir, r"%s: to=<joe@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]"
                             r":%d, .*status=sent" % (qid, fport))
        # the unfiltered one went to its mailbox, not to the filter
        wait_log(config_dir, r"to=<joe@example\.test>, relay=virtual, .*status=sent")
        assert len(filt.messages) == 1


def test_content_filter_and_the_reinjection_listener(config_dir, start_program):
    """content_filter sends everything to the filter; the listener the
    filter gives mail back to overrides it (listener.content_filter =),
    as master.cf's -o content_filter= does for Postfix."""
    fport = harness.free_port()
    back = harness.free_port()
    with FakeSMTP("127.0.0.1", fport) as filt:
        port = start_ternd(config_dir, start_program,
                           content_filter="smtp:[127.0.0.1]:%d" % fport,
                           listen_reinject="127.0.0.1:%d" % back,
                           reinject__content_filter="")
        send(port, "someone@example.org", ["joe@example.test"], "first pass")
        harness.wait_for(lambda: len(filt.messages) >= 1, what="the message at the filter")
        # the filter hands it back on the reinjection listener: delivered
        send(back, "someone@example.org", ["joe@example.test"], "second pass")
        wait_log(config_dir, r"to=<joe@example\.test>, relay=virtual, .*status=sent")
        assert len(filt.messages) == 1
