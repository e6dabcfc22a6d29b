"""Local submission: the sendmail front end (sendmail, mailq, newaliases
from one binary), its maildrop files, and ternd's pickup of mail that
was submitted while ternd was down.
"""

import io
import os
import re
import socket
import subprocess

import harness
from harness import run_tern, smtp_read_reply, tern_bin, wait_for


def sendmail(cfg, args, text, name="sendmail", env=None):
    """Run the front end as `name` (a symlink next to the real binary, so
    it finds tern the way an installed one does)."""
    prog = tern_bin("sendmail")
    if name != "sendmail":
        link = cfg.path / name
        if not link.exists():
            link.symlink_to(prog)
        prog = link
    full_env = dict(os.environ, TERN_CONFIG_DIR=str(cfg.path))
    full_env.update(env or {})
    data = text.encode() if isinstance(text, str) else text
    p = subprocess.run([str(prog), *args], input=data, capture_output=True,
                       env=full_env, timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def maildrop_files(cfg):
    d = cfg.queue_directory / "maildrop"
    if not d.exists():
        return []
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def parse_drop(path):
    """(envelope lines, content) of a maildrop file."""
    raw = path.read_text()
    head, _, content = raw.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "TERN-MAILDROP 1"
    return lines[1:], content


def test_sendmail_t_takes_to_cc_bcc_and_removes_bcc(config_dir):
    msg = ("To: Joe User <joe@example.test>, bob\n"
           "Cc: \"Carl, C.\" <carl@example.test> (comment)\n"
           "Bcc: hidden@example.test,\n second@example.test\n"
           "Subject: hello\n\nbody line\n")
    rc, out, err = sendmail(config_dir, ["-t", "-f", "alice@example.test",
                                         "-F", "Alice A."], msg)
    assert rc == 0, err
    files = maildrop_files(config_dir)
    assert len(files) == 1
    assert oct(files[0].parent.stat().st_mode & 0o7777) == "0o1733"
    env, content = parse_drop(files[0])
    assert "sender=alice@example.test" in env
    rcpts = [e[5:] for e in env if e.startswith("rcpt=")]
    assert rcpts == ["joe@example.test", "bob", "carl@example.test",
                     "hidden@example.test", "second@example.test"]
    assert "Bcc" not in content and "hidden@" not in content
    assert "To: Joe User <joe@example.test>, bob\n" in content
    # Added as Postfix's cleanup does for local submission.
    assert re.search(r"^Message-Id: <\d{14}\.[0-9A-F]{12}@tern\.test>$", content, re.M)
    assert re.search(r"^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)$",
                     content, re.M)
    assert "From: \"Alice A.\" <alice@example.test>\n" in content
    assert content.endswith("\nbody line\n")


def test_sendmail_existing_headers_kept_and_crlf_fixed(config_dir):
    msg = ("From: me@example.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           "Message-ID: <x@y>\r\n\r\nline\r\n")
    rc, _, err = sendmail(config_dir, ["joe@example.test"], msg)
    assert rc == 0, err
    _, content = parse_drop(maildrop_files(config_dir)[0])
    assert "\r" not in content
    assert content.count("Date:") == 1 and content.count("From:") == 1
    assert "Message-Id:" not in content and "Message-ID: <x@y>" in content


def test_nul_in_header_kept_byte_exact(config_dir):
    # A NUL used to cut the header's copy short while its length did
    # not: the byte after it came from uninitialised memory.
    rc, _, err = sendmail(config_dir, ["joe"], b"Subject: a\0b\n\nbody\n")
    assert rc == 0, err
    raw = maildrop_files(config_dir)[0].read_bytes()
    assert b"\nSubject: a\0b\n" in raw


def test_lone_dot_ends_input_unless_i(config_dir):
    rc, _, err = sendmail(config_dir, ["joe"], "Subject: a\n\none\n.\ntwo\n")
    assert rc == 0, err
    rc, _, err = sendmail(config_dir, ["-i", "joe"], "Subject: b\n\none\n.\ntwo\n")
    assert rc == 0, err
    rc, _, err = sendmail(config_dir, ["-oi", "joe"], "Subject: c\n\none\n.\nthree\n")
    assert rc == 0, err
    contents = {}
    for f in maildrop_files(config_dir):
        _, c = parse_drop(f)
        contents[re.search(r"Subject: (\w)", c).group(1)] = c
    assert contents["a"].endswith("\none\n")
    assert contents["b"].endswith("\none\n.\ntwo\n")
    assert contents["c"].endswith("\none\n.\nthree\n")


def test_default_sender_is_login_name(config_dir):
    import pwd
    login = pwd.getpwuid(os.getuid()).pw_name
    rc, _, err = sendmail(config_dir, ["joe"], "Subject: x\n\nx\n", env={"NAME": "Real Name"})
    assert rc == 0, err
    env, content = parse_drop(maildrop_files(config_dir)[0])
    assert "sender=%s" % login in env
    assert "uid=%d" % os.getuid() in env
    assert "From: Real Name <%s@tern.test>\n" % login in content


def test_errors_and_exit_codes(config_dir):
    rc, _, err = sendmail(config_dir, [], "Subject: x\n\nx\n")
    assert rc == 64 and "Recipient addresses must be specified" in err
    rc, _, err = sendmail(config_dir, ["-t"], "Subject: x\n\nx\n")
    assert rc == 64 and "No recipient addresses found in message header" in err
    rc, _, err = sendmail(config_dir, ["-bv", "joe"], "")
    assert rc == 64 and "-bv is not supported: address verification by mail" in err
    rc, _, err = sendmail(config_dir, ["-bd"], "")
    assert rc == 64 and "-bd is not supported" in err
    rc, _, err = sendmail(config_dir, ["joe@@example"], "x\n")
    assert rc == 65 and "bad recipient address syntax" in err
    assert maildrop_files(config_dir) == []
    # The queue cannot be written: EX_TEMPFAIL, so the caller retries.
    blocker = config_dir.write_file("notadir", "x")
    config_dir.set(queue_directory=str(blocker / "queue"))
    rc, _, err = sendmail(config_dir, ["joe"], "Subject: x\n\nx\n")
    assert rc == 75 and err.startswith("sendmail: fatal: ")


def test_ignored_sendmail_options(config_dir):
    rc, _, err = sendmail(config_dir, ["-oem", "-om", "-odb", "-v", "-N", "never",
                                       "-B", "8BITMIME", "joe"], "Subject: x\n\nx\n")
    assert rc == 0, err
    assert len(maildrop_files(config_dir)) == 1


def test_mailq_empty(config_dir):
    rc, out, err = sendmail(config_dir, [], "", name="mailq")
    assert (rc, out) == (0, "Mail queue is empty\n"), err
    rc, out, err = sendmail(config_dir, ["-bp"], "")
    assert (rc, out) == (0, "Mail queue is empty\n"), err


def test_newaliases_builds_alias_database(config_dir):
    aliases = config_dir.write_table("aliases",
                                     "# comment\nRoot: joe, alice\npostmaster:root\n"
                                     "\"odd name\": |/bin/true\nnocolon here\n")
    config_dir.set(alias_database="hash:" + str(aliases))
    rc, out, err = sendmail(config_dir, [], "", name="newaliases")
    assert rc == 0, err
    assert "line 5" in err and "need name:value pair" in err
    for key, value in (("root", "joe, alice"), ("postmaster", "root"),
                       ("odd name", "|/bin/true")):
        rc, out, _ = run_tern("map", "query", "-q", key, "hash:" + str(aliases))
        assert (rc, out) == (0, value + "\n")
    rc, _, _ = run_tern("map", "query", "-q", "root:", "hash:" + str(aliases))
    assert rc == 1
    # sendmail -bi is the same
    aliases.write_text("root: carl\n")
    rc, _, err = sendmail(config_dir, ["-bi"], "")
    assert rc == 0, err
    assert run_tern("map", "query", "-q", "root", "hash:" + str(aliases))[1] == "carl\n"


def ternd_start(start_program, cfg):
    (cfg.path / "data").mkdir(exist_ok=True)
    # Hermetic: no /etc/aliases; mail to example.test stays queued or is discarded.
    cfg.set(data_directory=str(cfg.path / "data"), alias_maps="", local_recipient_maps="")
    return start_program([str(tern_bin("ternd")), "-f", "-c", str(cfg.path)],
                         ready=cfg.smtp_port)


def test_submitted_while_down_is_picked_up_at_start(config_dir, start_program):
    config_dir.set(mydestination="", default_transport="discard")
    rc, _, err = sendmail(config_dir, ["-i", "joe@example.test"],
                          "Subject: while down\n\nkept\n")
    assert rc == 0, err
    assert len(maildrop_files(config_dir)) == 1
    ternd = ternd_start(start_program, config_dir)
    wait_for(lambda: maildrop_files(config_dir) == [], what="maildrop emptied")
    uid = os.getuid()
    m = wait_for(lambda: re.search(r"tern/\w+\[\d+\]: ([0-9A-F]+): uid=%d from=<\w+>" % uid,
                                   config_dir.maillog() + ternd.stderr()),
                 what="pickup log line")
    qid = m.group(1)
    log = config_dir.maillog() + ternd.stderr()
    assert re.search(r"%s: message-id=<\d{14}\.[0-9A-F]{12}@tern\.test>" % qid, log)
    # Submission while running is picked up at once (inotify).
    rc, _, err = sendmail(config_dir, ["joe@example.test"], "Subject: live\n\nx\n")
    assert rc == 0, err
    wait_for(lambda: len(re.findall(r"uid=%d from=" % uid,
                                    config_dir.maillog() + ternd.stderr())) == 2,
             timeout=5, what="second pickup")


def test_pickup_moves_bad_files_aside(config_dir, start_program):
    drop = config_dir.queue_directory / "maildrop"
    drop.mkdir(parents=True)
    (drop / "1.junk").write_text("not a maildrop file\n")
    (drop / "2.norcpt").write_text("TERN-MAILDROP 1\nuid=0\nsender=x\n\nbody\n")
    ternd = ternd_start(start_program, config_dir)
    wait_for(lambda: maildrop_files(config_dir) == [], what="bad files moved")
    corrupt = config_dir.queue_directory / "corrupt"
    assert sorted(p.name for p in corrupt.iterdir()) == ["1.junk", "2.norcpt"]
    log = config_dir.maillog() + ternd.stderr()
    assert "not a maildrop file -- moved to" in log
    assert "no sender or no recipients -- moved to" in log
    assert ternd.alive


# --- sendmail -bs: SMTP on stdin/stdout, one maildrop file per message ----


def replies_of(out):
    """Every reply in sendmail -bs output, as "CODE text" with the lines
    of a multi-line reply joined by "|"."""
    f, replies = io.BytesIO(out.encode()), []
    while f.tell() < len(out):
        code, lines = smtp_read_reply(f)
        replies.append("%d %s" % (code, "|".join(lines)))
    return replies


def bs(cfg, lines, args=(), env=None):
    """sendmail -bs with the whole dialogue pipelined on stdin (CRLF
    line ends unless a line already ends in \n); (rc, replies, stderr)."""
    text = "".join(x if x.endswith("\n") else x + "\r\n" for x in lines)
    rc, out, err = sendmail(cfg, ["-bs", *args], text, env=env)
    assert "\r\n" in out or out == "", out
    return rc, replies_of(out), err


def test_bs_two_messages_rset_and_delivery(config_dir, start_program):
    box = config_dir.use_virtual_box(default_transport="discard")
    rc, replies, err = bs(config_dir, [
        "EHLO client.test",
        "MAIL FROM:<alice@example.test> SIZE=100 BODY=8BITMIME",
        "RCPT TO:<box@example.test>",
        "RCPT TO:<bob>",  # bare local part: @$myorigin, as a sendmail argument
        "DATA",
        "Subject: first\r\n\r\n..leading dot\r\nline two\r\n.",
        "MAIL FROM:<>",
        "RCPT TO:<dropped@example.test>",
        "RSET",
        "MAIL FROM:<>",
        "RCPT TO:<box@example.test>",
        "DATA",
        "Subject: second\n\nbare LF lines\n.\n",  # LF-only ends are accepted
        "QUIT",
    ], env={"NAME": "Alice A"})
    assert rc == 0, err
    assert replies == [
        "220 tern.test ESMTP Tern",
        "250 tern.test|PIPELINING|SIZE 10240000|ENHANCEDSTATUSCODES|8BITMIME",
        "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued",
        "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok",
        "250 2.1.0 Ok", "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued",
        "221 2.0.0 Bye"]
    files = maildrop_files(config_dir)
    assert len(files) == 2
    env1, c1 = parse_drop(files[0])
    env2, c2 = parse_drop(files[1])
    assert "sender=alice@example.test" in env1
    assert [e for e in env1 if e.startswith("rcpt=")] == ["rcpt=box@example.test", "rcpt=bob"]
    assert "sender=" in env2 and [e for e in env2 if e.startswith("rcpt=")] == [
        "rcpt=box@example.test"]  # RSET dropped the other recipient
    # The SMTP trace header first (RFC 5321 §4.4, Postfix's stand-alone form).
    assert re.match(r"Received: from client\.test \(localhost \[127\.0\.0\.1\]\)\n"
                    r"\tby tern\.test \(Tern\) with ESMTP;\n\t\w{3}, ", c1)
    assert re.match(r"Received: from client\.test \(localhost \[127\.0\.0\.1\]\)\n"
                    r"\tby tern\.test \(Tern\) with ESMTP\n\tfor <box@example\.test>; ", c2)
    # The same header completion as a command-line submission.
    assert "\nFrom: Alice A <alice@example.test>\n" in c1
    assert "\nFrom: " not in c2  # none for the null sender
    for c in (c1, c2):
        assert "\r" not in c
        assert re.search(r"^Message-Id: <\d{14}\.[0-9A-F]{12}@tern\.test>$", c, re.M)
        assert re.search(r"^Date: ", c, re.M)
    assert c1.endswith("\n\n.leading dot\nline two\n")  # dot-unstuffed
    assert c2.endswith("\n\nbare LF lines\n")

    ternd = ternd_start(start_program, config_dir)
    wait_for(lambda: maildrop_files(config_dir) == [], what="maildrop emptied")

    def log():
        return config_dir.maillog() + ternd.stderr()

    wait_for(lambda: len(re.findall(r"to=<box@example\.test>.*status=sent", log())) == 2,
             what="both messages delivered to the box")
    wait_for(lambda: re.search(r"to=<bob@tern\.test>, relay=none, .*status=sent", log()),
             what="the bare recipient discarded")
    delivered = [p.read_text() for p in (box / "new").iterdir()]
    assert len(delivered) == 2
    first = next(d for d in delivered if "Subject: first" in d)
    # pickup's header, then the one -bs wrote, then the message's own.
    assert re.search(r"\nReceived: by tern\.test \(Tern, from userid %d\)\n\tid [0-9A-F]+; .*\n"
                     r"Received: from client\.test \(localhost \[127\.0\.0\.1\]\)\n"
                     r"\tby tern\.test \(Tern\) with ESMTP;\n\t.*\nSubject: first\n" % os.getuid(),
                     first)


def test_bs_sequence_and_syntax_errors(config_dir):
    rc, replies, err = bs(config_dir, [
        "RCPT TO:<joe>",
        "DATA",
        "HELO",
        "HELO client.test",
        "MAIL FROM:joe@example.test",  # no <>: accepted (strict_rfc821_envelopes = no)
        "MAIL FROM:<other@example.test>",
        "DATA",
        "RCPT <joe>",
        "RCPT TO:<joe@@example.test>",
        "RCPT TO:<>",
        "RCPT TO:<joe> NOTIFY=NEVER",
        "RSET",
        "MAIL FROM <joe>",
        "MAIL FROM:<a@b@c>",
        "MAIL FROM:<joe> SIZE=99999999999",
        "MAIL FROM:<joe> SIZE=x",
        "MAIL FROM:<joe> RET=FULL",
        "MAIL FROM:<j\u00f6e@example.test>",
        "VRFY joe",
        "EXPN staff",
        "",
        "NOOP",
        "X" * 3000,
        "QUIT",
    ])
    assert rc == 0, err
    assert replies == [
        "220 tern.test ESMTP Tern",
        "503 5.5.1 Error: need MAIL command",
        "503 5.5.1 Error: need RCPT command",
        "501 Syntax: HELO hostname",
        "250 tern.test",
        "250 2.1.0 Ok",
        "503 5.5.1 Error: nested MAIL command",
        "554 5.5.1 Error: no valid recipients",  # Postfix: MAIL given, no RCPT
        "501 5.5.4 Syntax: RCPT TO:<address>",
        "501 5.1.3 Bad recipient address syntax",
        "501 5.1.3 Bad recipient address syntax",
        "555 5.5.4 Unsupported option: NOTIFY=NEVER",
        "250 2.0.0 Ok",
        "501 5.5.4 Syntax: MAIL FROM:<address>",
        "501 5.1.7 Bad sender address syntax",
        "552 5.3.4 Message size exceeds fixed limit",
        "501 5.5.4 Bad message size syntax",
        "555 5.5.4 Unsupported option: RET=FULL",
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
        "502 5.5.1 VRFY command is disabled",
        "502 5.5.2 Error: command not recognized",
        "500 5.5.2 Error: bad syntax",
        "250 2.0.0 Ok",
        "500 5.5.2 Error: line too long",
        "221 2.0.0 Bye"]
    assert maildrop_files(config_dir) == []


def test_bs_end_of_input(config_dir):
    # Between transactions, end of input is a normal end (no QUIT needed).
    rc, replies, err = bs(config_dir, ["HELO c", "MAIL FROM:<a@example.test>",
                                       "RCPT TO:<joe>", "DATA", "Subject: x\r\n\r\nx\r\n."])
    assert (rc, replies[-1]) == (0, "250 2.0.0 Ok: queued"), err
    assert len(maildrop_files(config_dir)) == 1
    # Inside a transaction it is not: the caller's message was not sent.
    rc, replies, err = bs(config_dir, ["HELO c", "MAIL FROM:<a@example.test>", "RCPT TO:<joe>"])
    assert (rc, replies[-1]) == (75, "250 2.1.5 Ok")
    assert "input ended inside a mail transaction" in err
    rc, replies, err = bs(config_dir, ["MAIL FROM:<a@example.test>", "RCPT TO:<joe>", "DATA",
                                       "Subject: cut\r\n\r\nno end"])
    assert (rc, replies[-1]) == (75, "354 End data with <CR><LF>.<CR><LF>")
    assert len(maildrop_files(config_dir)) == 1
    # QUIT inside a transaction abandons it on purpose.
    rc, replies, _ = bs(config_dir, ["MAIL FROM:<a@example.test>", "QUIT"])
    assert (rc, replies[-1]) == (0, "221 2.0.0 Bye")


def test_bs_limits(config_dir):
    config_dir.set(message_size_limit="200", smtpd_hard_error_limit="3",
                   smtpd_recipient_limit="1")
    rc, replies, err = bs(config_dir, [
        "EHLO c",
        "MAIL FROM:<a@example.test>", "RCPT TO:<joe>", "RCPT TO:<bob>", "DATA",
        "Subject: big\r\n\r\n" + "x" * 300 + "\r\n.",
        # the session is still in step after the oversized message
        "MAIL FROM:<a@example.test>", "RCPT TO:<joe>", "DATA", "Subject: small\r\n\r\nok\r\n.",
        "FOO", "BAR", "NOOP"])
    assert rc == 75, err
    assert replies == [
        "220 tern.test ESMTP Tern",
        "250 tern.test|PIPELINING|SIZE 200|ENHANCEDSTATUSCODES|8BITMIME",
        "250 2.1.0 Ok", "250 2.1.5 Ok", "452 4.5.3 Error: too many recipients",
        "354 End data with <CR><LF>.<CR><LF>", "552 5.3.4 Message size exceeds fixed limit",
        "250 2.1.0 Ok", "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued",
        "502 5.5.2 Error: command not recognized",
        "421 4.7.0 tern.test Error: too many errors"]
    files = maildrop_files(config_dir)
    assert len(files) == 1 and "Subject: small" in parse_drop(files[0])[1]


def test_bs_queue_write_error_keeps_session(config_dir):
    # A file where the queue directory should be: the maildrop cannot be
    # made (this fails for root too, unlike a permission bit).
    blocker = config_dir.write_file("queue-blocker", "x")
    config_dir.set(queue_directory=str(blocker))
    env = dict(os.environ, TERN_CONFIG_DIR=str(config_dir.path))
    p = subprocess.Popen([str(tern_bin("sendmail")), "-bs"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        def say(*lines):
            p.stdin.write("".join(x + "\r\n" for x in lines).encode())
            p.stdin.flush()
            return ["%d %s" % (c, "|".join(t)) for c, t in
                    (smtp_read_reply(p.stdout) for _ in lines)]

        assert smtp_read_reply(p.stdout) == (220, ["tern.test ESMTP Tern"])
        message = ["MAIL FROM:<a@example.test>", "RCPT TO:<joe>", "DATA",
                   "Subject: x\r\n\r\nx\r\n."]
        assert say(*message)[-1] == "451 4.3.0 Error: queue file write error"
        blocker.unlink()  # the queue directory can be made now
        assert say(*message)[-1] == "250 2.0.0 Ok: queued"
        assert say("QUIT") == ["221 2.0.0 Bye"]
        p.stdin.close()
        assert p.wait(timeout=10) == 0
        assert "sendmail: warning: " in p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert len(list((blocker / "maildrop").iterdir())) == 1


def test_bs_refuses_network_and_arguments(config_dir):
    rc, replies, err = bs(config_dir, ["QUIT"], args=["joe"])
    assert (rc, replies) == (64, []) and "-bs takes no recipients" in err
    # Behind inetd or a socket unit, -bs would be an open relay: refused.
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        with socket.create_connection(ls.getsockname()) as client:
            server, _ = ls.accept()
            with server:
                env = dict(os.environ, TERN_CONFIG_DIR=str(config_dir.path))
                p = subprocess.run([str(tern_bin("sendmail")), "-bs"], stdin=server,
                                   stdout=server, stderr=subprocess.PIPE, env=env, timeout=30)
            client.settimeout(5)
            assert client.recv(100) == b""  # no greeting
    assert p.returncode == 64
    assert "does not receive mail from the network" in p.stderr.decode()
    assert maildrop_files(config_dir) == []
