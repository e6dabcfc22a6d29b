"""Local submission: the sendmail front end (sendmail, mailq, newaliases
from one binary), its maildrop files, and ternd's pickup of mail that
was submitted while ternd was down.
"""

import os
import re
import subprocess

import harness
from harness import run_tern, tern_bin, wait_for


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
    rc, _, err = sendmail(config_dir, ["-bs"], "")
    assert rc == 64 and "-bs is not supported" in err
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
