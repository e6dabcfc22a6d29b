"""test_outbound_more.py - outbound delivery beyond the basics of
test_outbound.py (whose Outbound fixture and helpers this file reuses):
mail looping back to ternd itself, connection reuse (conn_use=N), dead
destinations ("delivery temporarily suspended") and `tern flush` reviving
them, failures of mail from <> going to the postmaster from the
double-bounce sender and never looping, and delay warnings.
"""

import email
import re
import time

import pytest

import harness
from test_outbound import (MX1, SENDER, delivery_re, hostport, outbound,  # noqa: F401
                           parse_report, rfc822)


def test_mx_pointing_at_ourselves_bounces_as_a_loop(outbound):
    # loop.test's only MX is 127.0.0.1, on ternd's own port.
    loop_port = outbound.cfg.smtp_port
    outbound.start(transport={"loop.test": "smtp:loop.test:%d" % loop_port},
                   mx={"loop.test": [(10, "mx.loop.test")]}, a={"mx.loop.test": ["127.0.0.1"]})
    outbound.send(["u@loop.test"])
    outbound.wait_status("u@loop.test", delivery_re(
        "u@loop.test", "none", r"5\.4\.6", "bounced",
        re.escape("mail for loop.test loops back to myself"), service="smtp"))
    [(msg, per_msg, rcpts)] = outbound.notices(1)
    assert rcpts[0]["Status"] == "5.4.6"


def test_connection_reused_for_the_next_message(outbound):
    mx1 = outbound.fake(MX1)
    outbound.start()
    for i in range(3):
        outbound.send(["u%d@remote.test" % i])
        outbound.wait_fake(mx1, i + 1)
    relay = hostport("mx1.remote.test", MX1, outbound.port)
    log = outbound.log()
    assert re.search(r"to=<u1@remote\.test>, relay=%s, conn_use=2, " % relay, log), log
    assert re.search(r"to=<u2@remote\.test>, relay=%s, conn_use=3, " % relay, log), log
    assert len(mx1.connections) == 1, mx1.describe()
    # one transaction after the other on the one connection, each from
    # MAIL to the end of data (no RSET needed in between: RFC 5321 4.1.1.4)
    assert len(mx1.connections[0]["transactions"]) == 3, mx1.describe()


def test_dead_destination_suspended_until_flush(outbound):
    # Nothing listens on mx1: the first message finds it dead; the second
    # is deferred without a connection attempt.
    outbound.start(minimal_backoff_time="1h", maximal_backoff_time="1h")
    outbound.send(["a@remote.test"])
    outbound.wait_status("a@remote.test", delivery_re(
        "a@remote.test", "none", r"4\.4\.1", "deferred",
        re.escape("connect to mx1.remote.test[%s]:%d: Connection refused" % (MX1, outbound.port)),
        service="smtp"))
    outbound.send(["b@remote.test"])
    outbound.wait_status("b@remote.test", delivery_re(
        "b@remote.test", "none", r"4\.4\.1", "deferred",
        re.escape("delivery temporarily suspended: connect to mx1.remote.test[%s]:%d: "
                  "Connection refused" % (MX1, outbound.port)), service="smtp"))
    # The site comes back; flush revives the destination and delivers both.
    mx1 = outbound.fake(MX1)
    outbound.tern("flush")
    outbound.wait_fake(mx1, 1)
    outbound.wait(lambda: sorted(mx1.delivered()) == ["a@remote.test", "b@remote.test"],
                  "both delivered after the flush")


def test_bounce_of_a_bounce_goes_to_postmaster_and_never_loops(outbound):
    outbound.fake(MX1, rcpt_reply="550 5.1.1 <u@remote.test>: unknown user")
    # postmaster is a mailbox in the virtual box too
    outbound.start(**{"2bounce_notice_recipient": "postmaster@example.test"})
    outbound.send(["u@remote.test"], sender="")
    outbound.wait_status("u@remote.test", delivery_re(
        "u@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"5\.1\.1",
        "bounced", ".*unknown user.*", service="smtp"))
    m = outbound.wait_log(r"([0-9A-F]+): postmaster non-delivery notification: ([0-9A-F]+)")
    new = outbound.box / "new"
    outbound.wait(lambda: new.is_dir() and len(list(new.iterdir())) == 1, "the postmaster notice")
    [path] = list(new.iterdir())
    msg = email.message_from_bytes(path.read_bytes())
    # From the double-bounce address, not <>: its own failure must not loop.
    assert msg["Return-Path"] == "<double-bounce@tern.test>", msg.as_string()
    assert msg["To"] == "postmaster@example.test"
    assert msg.get_content_type() == "multipart/report"
    [report] = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    rcpts = report.get_payload()[1:]
    assert rfc822(rcpts[0]["Final-Recipient"]) == "u@remote.test"
    assert rcpts[0]["Action"] == "failed"

    # A notice from double-bounce that fails is only logged: no third mail.
    outbound.send(["u@remote.test"], sender="double-bounce@tern.test")
    outbound.wait_log(r"undeliverable postmaster notification discarded")
    time.sleep(1)
    assert outbound.notice_count() == 1


def test_delay_warning_once(outbound):
    outbound.fake(MX1, rcpt_reply="450 4.2.1 <u@remote.test>: try later")
    outbound.start(delay_warning_time="1s")
    outbound.send(["u@remote.test"])
    m = outbound.wait_log(r"([0-9A-F]+): sender delay notification: [0-9A-F]+", timeout=15)
    [(msg, per_msg, rcpts)] = outbound.notices(1)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert rcpts[0]["Action"] == "delayed"
    assert rcpts[0]["Status"] == "4.2.1"
    # later retries do not warn again
    outbound.wait(lambda: outbound.log().count("%s: to=<u@remote.test>" % m.group(1)) >= 3,
                  "two more attempts", timeout=15)
    assert outbound.log().count("sender delay notification") == 1
    assert outbound.notice_count() == 1
    # the mark is in the queue, not in memory: a restart does not warn again
    outbound.runs[-1].stop()
    before = outbound.log().count("%s: to=<u@remote.test>" % m.group(1))
    outbound.start_ternd()
    outbound.wait(lambda: outbound.log().count("%s: to=<u@remote.test>" % m.group(1))
                  >= before + 2, "two attempts after the restart", timeout=20)
    assert outbound.log().count("sender delay notification") == 1
    assert outbound.notice_count() == 1
    harness.run_tern("queue", "delete", "ALL", config_dir=outbound.cfg, check=True)


def test_tempfail_on_a_reused_connection_is_deferred_not_retried_at_once(outbound):
    """A 4xx to RCPT on a cached connection is that server's answer: the
    recipient is deferred and logged, not silently tried again on a fresh
    connection to the same server."""
    replies = {"later@remote.test": "450 4.2.1 <later@remote.test>: try later"}
    mx1 = outbound.fake(MX1, rcpt_reply=replies)
    outbound.start(minimal_backoff_time="1h", maximal_backoff_time="1h")
    outbound.send(["first@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.send(["later@remote.test"])
    outbound.wait_status("later@remote.test", delivery_re(
        "later@remote.test", hostport("mx1.remote.test", MX1, outbound.port) + ", conn_use=2",
        r"4\.2\.1", "deferred", ".*try later.*", service="smtp"))
    time.sleep(0.5)
    tried = [a for t in mx1.transactions for (a, _, _) in t["rcpts_tried"]]
    assert tried.count("later@remote.test") == 1, mx1.describe()


def test_stale_cached_connection_is_replaced_at_once(outbound):
    """The server drops the idle connection ternd kept: the next message
    goes over a fresh connection in the same attempt, never deferred."""
    mx1 = outbound.fake(MX1)
    outbound.start(minimal_backoff_time="1h", maximal_backoff_time="1h")
    outbound.send(["a@remote.test"])
    outbound.wait_fake(mx1, 1)
    mx1.stop()  # closes the cached connection too
    mx1b = outbound.fake(MX1)
    outbound.send(["b@remote.test"])
    outbound.wait_status("b@remote.test", delivery_re(
        "b@remote.test", hostport("mx1.remote.test", MX1, outbound.port), r"2\.0\.0", "sent",
        ".*", service="smtp"))
    assert mx1b.delivered() == ["b@remote.test"]



def test_slow_destination_holds_no_delivery_worker(outbound):
    # slow.test answers each end of data after 2 s and takes one delivery
    # at a time; 8 messages for it wait for their turn. With 4 delivery
    # workers, a client that blocked a worker per waiting message would
    # leave none for fast.test until most of the slow backlog was through
    # (~16 s); on the event loops the waiting messages hold no worker.
    slow = outbound.fake(MX1, delay_seconds=2.0, delay_on=("DOT",))
    fast_port = harness.free_port()
    fast = outbound.fake("127.0.0.3", port=fast_port)
    outbound.start(transport={"slow.test": "smtp:[127.0.0.2]:%d" % outbound.port,
                              "fast.test": "smtp:[127.0.0.3]:%d" % fast_port},
                   default_process_limit="4",
                   smtp_destination_concurrency_limit="1")
    for i in range(8):
        outbound.send(["s%d@slow.test" % i])
    outbound.wait(lambda: len(slow.connections) >= 1, "the first slow delivery", timeout=10)
    t0 = time.monotonic()
    outbound.send(["f@fast.test"])
    outbound.wait(lambda: len(fast.delivered()) >= 1, "the fast.test message", timeout=20)
    took = time.monotonic() - t0
    assert took < 5, "fast.test waited %.1fs behind the slow backlog" % took
    assert len(slow.delivered()) < 8, "the slow backlog was already through: proves nothing"
    assert slow.max_concurrent <= 1, slow.describe()
    outbound.wait(lambda: len(slow.delivered()) >= 8, "the slow backlog", timeout=40)
    assert sorted(slow.delivered()) == sorted("s%d@slow.test" % i for i in range(8))


def test_hung_server_times_out_and_defers(outbound):
    # A server that accepts the connection and never greets: the session
    # ends after smtp_helo_timeout with Postfix's wording, the mail is
    # deferred, and ternd goes on serving (a second destination works).
    hung = outbound.fake(MX1, delay_seconds=30.0, delay_on=("GREETING",))
    ok_port = harness.free_port()
    ok = outbound.fake("127.0.0.3", port=ok_port)
    outbound.start(transport={"hung.test": "smtp:[127.0.0.2]:%d" % outbound.port,
                              "ok.test": "smtp:[127.0.0.3]:%d" % ok_port},
                   smtp_helo_timeout="2s")
    outbound.send(["h@hung.test"])
    outbound.send(["o@ok.test"])
    outbound.wait(lambda: len(ok.delivered()) >= 1, "the ok.test message", timeout=10)
    outbound.wait_status("h@hung.test", delivery_re(
        "h@hung.test", "none", r"4\.4\.2", "deferred",
        re.escape("conversation with 127.0.0.2[127.0.0.2] timed out while receiving "
                  "the initial server greeting"), service="smtp"), timeout=15)
    assert len(hung.connections) >= 1


def test_refusals_at_mail_data_and_end_of_data(outbound):
    """Each stage's refusal reaches the recipient with Postfix's wording
    "host h[a] said: ... (in reply to X command)"; a pipelined MAIL refusal
    has its RCPT and DATA replies read (the session stays in step, the
    next message goes over the same connection); multi-line replies are
    joined."""
    relay = hostport("mx1.remote.test", MX1, outbound.port)

    def mail_reply(sender, params):
        return "550 5.7.1 sender refused" if sender.startswith("bad") else "250 2.1.0 Ok"

    def data_reply(txn):
        if "big@remote.test" in txn["rcpts"]:
            return "552-5.3.4 message too big\n552 5.3.4 really"
        if "later@remote.test" in txn["rcpts"]:
            return "451 4.3.0 queue trouble"
        return "250 2.0.0 Ok: queued as FAKE"

    mx1 = outbound.fake(MX1, mail_reply=mail_reply, data_reply=data_reply)
    outbound.start(minimal_backoff_time="1h", maximal_backoff_time="1h")
    outbound.send(["x@remote.test"], sender="bad@example.test")
    outbound.wait_status("x@remote.test", delivery_re(
        "x@remote.test", relay, r"5\.7\.1", "bounced",
        re.escape("host mx1.remote.test[127.0.0.2] said: 550 5.7.1 sender refused "
                  "(in reply to MAIL FROM command)"), service="smtp"))
    outbound.send(["ok@remote.test"])
    outbound.wait_fake(mx1, 1)
    outbound.send(["big@remote.test"])
    outbound.wait_status("big@remote.test", delivery_re(
        "big@remote.test", relay + r"(?:, conn_use=\d+)?", r"5\.3\.4", "bounced",
        re.escape("host mx1.remote.test[127.0.0.2] said: 552-5.3.4 message too big "
                  "552 5.3.4 really (in reply to end of DATA command)"), service="smtp"))
    outbound.send(["later@remote.test"])
    outbound.wait_status("later@remote.test", delivery_re(
        "later@remote.test", relay + r"(?:, conn_use=\d+)?", r"4\.3\.0", "deferred",
        re.escape("host mx1.remote.test[127.0.0.2] said: 451 4.3.0 queue trouble "
                  "(in reply to end of DATA command)"), service="smtp"))
    assert "ok@remote.test" in mx1.delivered()
    # the refused MAIL did not leave the session out of step
    assert len(mx1.connections) <= 2, mx1.describe()


def test_bind_address_line_length_and_cache_policy(outbound):
    """smtp_bind_address picks the source address; smtp_line_length_limit
    breaks longer lines with CR LF SPACE; smtp_connection_cache_on_demand
    = no keeps no connection for unlisted destinations."""
    mx1 = outbound.fake(MX1)
    outbound.start(smtp_bind_address="127.0.0.9", smtp_line_length_limit="100",
                   smtp_connection_cache_on_demand="no")
    long_line = "x" * 250
    msg = ("From: s@example.test\r\nTo: u@remote.test\r\nSubject: long\r\n\r\n"
           "%s\r\nshort\r\n" % long_line)
    outbound.send(["u@remote.test"], msg=msg)
    outbound.wait_fake(mx1, 1)
    outbound.send(["v@remote.test"])
    outbound.wait_fake(mx1, 2)
    assert all(c["peer"][0] == "127.0.0.9" for c in mx1.connections), mx1.describe()
    assert len(mx1.connections) == 2, "no reuse with on-demand caching off:\n" + mx1.describe()
    data = mx1.messages[0]["data"].decode()
    lines = data.split("\r\n")
    assert max(len(x) for x in lines) <= 100, [len(x) for x in lines]
    i = lines.index("x" * 100)
    assert lines[i + 1] == " " + "x" * 99 and lines[i + 2] == " " + "x" * 51, lines[i:i + 3]


@pytest.mark.parametrize("setting,value,words", [
    ("smtp_host_lookup", "native", "DNS only"),
    ("smtp_dns_support_level", "dnssec", "not supported"),
    ("smtp_address_preference", "ipv5", "not ipv4, ipv6 or any"),
    ("smtp_bind_address", "::1", "not an IPv4 address"),
    ("smtp_tls_security_level", "fingerprint", "unknown level"),
    ("smtp_tls_ciphers", "strong", "unknown grade"),
])
def test_unsupported_client_settings_are_refused(config_dir, setting, value, words):
    """ternd refuses to start (with the reason) rather than run with a
    setting it would not honour."""
    import subprocess
    config_dir.set(**{setting: value})
    p = subprocess.run([str(harness.tern_bin("ternd")), "-f", "-c", str(config_dir)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and words in p.stdout + p.stderr, p.stdout + p.stderr
