"""test_conf.py - "tern conf" from the outside, as an admin uses it.

Self-contained (plain pytest tmp_path): each test writes a tern.conf into
a temporary config directory and runs $TERN_BUILD/bin/tern conf -c DIR.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("TERN_BUILD", REPO / "build"))
TERN = BUILD / "bin" / "tern"


POSTCONF = shutil.which("postconf") or ("/usr/sbin/postconf"
                                         if os.path.exists("/usr/sbin/postconf") else None)


def tern_conf(*args, config_dir=None, env_dir=None):
    env = dict(os.environ)
    env.pop("TERN_CONFIG_DIR", None)
    if env_dir is not None:
        env["TERN_CONFIG_DIR"] = str(env_dir)
    argv = [str(TERN), "conf"]
    if config_dir is not None:
        argv += ["-c", str(config_dir)]
    p = subprocess.run(argv + list(args), capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


def write_conf(d, text):
    (d / "tern.conf").write_text(text)
    return d / "tern.conf"


def registry_names():
    """Parameter names as written in shared/params.c (independent of the
    binary): each entry is MACRO("name", ...) or {"name", CFG_...}."""
    src = (REPO / "shared" / "params.c").read_text()
    names = re.findall(r'^\s*(?:[A-Z]+\(|\{)"([A-Za-z0-9_]+)",', src, re.M)
    assert len(names) > 200
    return names


def test_defaults_cover_the_registry(tmp_path):
    rc, out, err = tern_conf("-d", config_dir=tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    names = [l.split(" =", 1)[0] for l in lines]
    assert len(lines) == len(registry_names())
    assert sorted(names) == sorted(registry_names())
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert "smtpd_banner = $myhostname ESMTP $mail_name" in lines
    assert "listen_smtp = *:25" in lines
    # Without a tern.conf, the effective values are the defaults.
    rc, out2, err = tern_conf(config_dir=tmp_path)
    assert rc == 0 and out2 == out


POSTFIX_SAME = [
    "maximal_queue_lifetime", "bounce_queue_lifetime", "message_size_limit",
    "smtpd_banner", "milter_connect_macros", "milter_mail_macros",
    "smtpd_policy_service_default_action", "smtpd_policy_service_max_ttl",
    "smtpd_recipient_limit", "minimal_backoff_time", "maximal_backoff_time",
    "smtpd_null_access_lookup_key", "default_destination_recipient_limit",
    "smtp_connect_timeout", "lmtp_data_done_timeout", "access_map_reject_code",
    "smtpd_expansion_filter", "mydestination", "myorigin",
]


@pytest.mark.skipif(not shutil.which("postconf") and not os.path.exists("/usr/sbin/postconf"),
                    reason="Postfix's postconf is not installed")
def test_defaults_match_postfix(tmp_path):
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    rc, ours, err = tern_conf("-d", *POSTFIX_SAME, config_dir=tmp_path)
    assert rc == 0, err
    theirs = subprocess.run([postconf, "-d"] + POSTFIX_SAME, capture_output=True,
                            text=True).stdout
    assert ours.splitlines() == theirs.splitlines()


def test_n_shows_only_settings(tmp_path):
    write_conf(tmp_path, "# site settings\nmyhostname = mx.example.com\n"
                         "smtpd_helo_required = yes\n")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert rc == 0, err
    assert out == "myhostname = mx.example.com\nsmtpd_helo_required = yes\n"
    rc, out, err = tern_conf("-x", "smtpd_banner", "mydomain", config_dir=tmp_path)
    assert out == "smtpd_banner = mx.example.com ESMTP Tern\nmydomain = example.com\n"
    rc, out, err = tern_conf("-h", "smtpd_helo_required", config_dir=tmp_path)
    assert out == "yes\n"


def test_config_dir_from_environment(tmp_path):
    write_conf(tmp_path, "relayhost = [smart.example]:587\n")
    rc, out, err = tern_conf("relayhost", env_dir=tmp_path)
    assert (rc, out) == (0, "relayhost = [smart.example]:587\n"), err


def test_edit_keeps_comments_and_replaces_continuations(tmp_path):
    conf = write_conf(tmp_path, "# Tern config\n"
                                "smtpd_banner = old\n"
                                "    banner text\n"
                                "\n"
                                "# relay control\n"
                                "mynetworks = 127.0.0.0/8\n")
    rc, out, err = tern_conf("-e", "smtpd_banner = $myhostname hi", "relayhost=[r.example]",
                             config_dir=tmp_path)
    assert rc == 0, err
    assert conf.read_text() == ("# Tern config\n"
                                "smtpd_banner = $myhostname hi\n"
                                "\n"
                                "# relay control\n"
                                "mynetworks = 127.0.0.0/8\n"
                                "relayhost = [r.example]\n")
    rc, out, err = tern_conf("-X", "mynetworks", config_dir=tmp_path)
    assert rc == 0, err
    assert "mynetworks" not in conf.read_text()
    assert "# relay control\n" in conf.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "tern.conf"]  # no temp files


def test_edit_listener_creates_file(tmp_path):
    rc, out, err = tern_conf("-e", "listen_smtp=127.0.0.1:2626", config_dir=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "tern.conf").read_text() == "listen_smtp = 127.0.0.1:2626\n"
    # name=value alone implies -e, as postconf.
    rc, out, err = tern_conf("listen_smtps=*:465", "smtps.smtpd_tls_wrappermode=yes",
                             config_dir=tmp_path)
    assert rc == 0 and err == "", err
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert (rc, err) == (0, "")
    assert out == ("listen_smtp = 127.0.0.1:2626\nlisten_smtps = *:465\n"
                   "smtps.smtpd_tls_wrappermode = yes\n")


@pytest.mark.parametrize("setting, message", [
    ("smtpd_helo_required=maybe", 'bad boolean value "maybe" for parameter "smtpd_helo_required"'),
    ("smtpd_timeout=5 minutes", 'bad time value "5 minutes" for parameter "smtpd_timeout"'),
    ("listen_smtp=::1:25", 'bad listener address "::1:25"'),
    ("smtpd_recipient_limit=0", 'parameter "smtpd_recipient_limit": must be at least 1'),
    ("alias_maps=/etc/aliases", 'bad table "/etc/aliases"'),
    ("smtps.smtpd_tls_wrappermode=sure", 'bad boolean value "sure"'),
])
def test_edit_refuses_bad_values(tmp_path, setting, message):
    conf = write_conf(tmp_path, "# keep\nlisten_smtps = *:465\n")
    rc, out, err = tern_conf("-e", setting, config_dir=tmp_path)
    assert rc != 0
    assert message in err
    assert conf.read_text() == "# keep\nlisten_smtps = *:465\n"


def test_bad_line_reported_with_file_and_line(tmp_path):
    conf = write_conf(tmp_path, "# comment\nmyhostname = mx.example.com\n"
                                "smtpd_helo_required = maybe\n")
    rc, out, err = tern_conf(config_dir=tmp_path)
    assert rc == 1
    assert err.strip() == (f'tern: {conf}, line 3: bad boolean value "maybe" '
                           f'for parameter "smtpd_helo_required"')
    # -e can repair it.
    rc, out, err = tern_conf("-e", "smtpd_helo_required=yes", config_dir=tmp_path)
    assert rc == 0, err
    rc, out, err = tern_conf("smtpd_helo_required", config_dir=tmp_path)
    assert (rc, out) == (0, "smtpd_helo_required = yes\n")


def test_syntax_and_loop_errors(tmp_path):
    conf = write_conf(tmp_path, "myhostname = x\n\nthis is wrong\n")
    rc, out, err = tern_conf(config_dir=tmp_path)
    assert rc == 1
    assert f"tern: {conf}, line 3: missing '=' after attribute name" in err
    write_conf(tmp_path, "myorigin = $mydomain\nmydomain = $myorigin\n")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert rc == 1
    assert "recursive expansion" in err and "line " in err


def test_unknown_parameter_warnings(tmp_path):
    conf = write_conf(tmp_path, "myhostname = mx.example.com\nsmtpd_helo_requird = yes\n"
                                "my_rbl = zen.example\n"
                                "smtpd_client_restrictions = reject_rbl_client $my_rbl\n")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert rc == 0
    # postconf: "warning: FILE: unused parameter: smtpd_helo_requird=yes"
    assert err == f"tern: warning: {conf}, line 2: unused parameter: smtpd_helo_requird=yes\n"
    assert "smtpd_helo_requird = yes" in out
    rc, out, err = tern_conf("no_such_parameter", config_dir=tmp_path)
    assert rc == 0  # as postconf
    assert "tern: warning: no_such_parameter: unknown parameter" in err
    assert "tern: warning" in err and out == ""
    # As postconf -e, writing an unknown name says nothing.
    rc, out, err = tern_conf("-e", "foo=1", config_dir=tmp_path)
    assert (rc, out, err) == (0, "", "")
    assert conf.read_text().endswith("\nfoo = 1\n")


def test_postfix_warnings(tmp_path):
    conf = write_conf(tmp_path, " leading = x\nmyorigin = ${nosuch?x}\n"
                                "smtpd_reject_footer = $client_address\n")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert rc == 0
    assert err == (f'tern: warning: {conf}, line 1: logical line must not start with '
                   f'whitespace: " leading = x"\n'
                   f"tern: warning: {conf}, line 2: undefined parameter: nosuch\n")
    # A raw parameter is not expanded (its $names are filled in at run time).
    rc, out, err = tern_conf("-x", "smtpd_reject_footer", "myorigin", config_dir=tmp_path)
    assert out == "smtpd_reject_footer = $client_address\nmyorigin =\n"


@pytest.mark.parametrize("value", ["$", "a$ b", "a$", "$-x", "${}"])
def test_empty_macro_name(tmp_path, value):
    conf = write_conf(tmp_path, f"# c\nmyorigin = {value}\n")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert (rc, out) == (1, "")
    assert err == f'tern: {conf}, line 2: parameter "myorigin": empty macro name: "{value}"\n'
    if POSTCONF and value == "a$ b":  # postconf is slow: check one case
        (tmp_path / "main.cf").write_text(conf.read_text())
        p = subprocess.run([POSTCONF, "-c", str(tmp_path), "-n"], capture_output=True, text=True)
        assert p.returncode == 1
        assert f'warning: empty macro name: "{value}"' in p.stderr
    # -e refuses it and leaves the file alone.
    write_conf(tmp_path, "myorigin = ok\n")
    rc, out, err = tern_conf("-e", f"myorigin={value}", config_dir=tmp_path)
    assert rc == 1
    assert err == f'tern: parameter "myorigin": empty macro name: "{value}"\n'
    assert conf.read_text() == "myorigin = ok\n"
    # $$ is a literal '$'.
    rc, out, err = tern_conf("-e", "smtpd_banner=5$$", config_dir=tmp_path)
    assert (rc, err) == (0, "")
    rc, out, err = tern_conf("-x", "smtpd_banner", config_dir=tmp_path)
    assert out == "smtpd_banner = 5$\n"


def test_missing_config_directory(tmp_path):
    missing = tmp_path / "nonexistent"
    for args, kw in [((), {"config_dir": missing}), (("-n",), {"config_dir": missing}),
                     (("myorigin",), {"env_dir": missing}),
                     (("-e", "myorigin=x"), {"config_dir": missing}),
                     (("-X", "myorigin"), {"config_dir": missing})]:
        rc, out, err = tern_conf(*args, **kw)
        assert (rc, out) == (1, ""), args
        assert err == f"tern: open {missing}/tern.conf: No such file or directory\n", args
    assert not missing.exists()
    # -d reads no file, as postconf -d.
    rc, out, err = tern_conf("-d", "myorigin", config_dir=missing)
    assert (rc, out, err) == (0, "myorigin = $myhostname\n", "")


def test_edit_keeps_comments_between_continuation_lines(tmp_path):
    text = "myorigin = a\n  # c\n\n  b\n# after\nmydomain = d\n"
    conf = write_conf(tmp_path, text)
    rc, out, err = tern_conf("-e", "myorigin=z", config_dir=tmp_path)
    assert (rc, err) == (0, "")
    assert conf.read_text() == "myorigin = z\n  # c\n\n# after\nmydomain = d\n"
    if POSTCONF:
        (tmp_path / "main.cf").write_text(text)
        subprocess.run([POSTCONF, "-c", str(tmp_path), "-e", "myorigin=z"], capture_output=True)
        assert (tmp_path / "main.cf").read_text() == conf.read_text()
    write_conf(tmp_path, text)
    rc, out, err = tern_conf("-X", "myorigin", config_dir=tmp_path)
    assert (rc, err) == (0, "")
    assert conf.read_text() == "  # c\n\n# after\nmydomain = d\n"


@pytest.mark.parametrize("args, message", [
    (["-e", "=x"], 'missing attribute name: "=x"'),
    (["-e", " = x"], 'missing attribute name: "= x"'),
    (["=x"], 'missing attribute name: "=x"'),
    (["-e", "a b=x"], "missing '=' after attribute name: \"a b=x\""),
    (["-e", "myorigin=x", "#x=1"], '-e and -X accept no comment input: "#x=1"'),
    (["-X", ""], "-X requires non-blank parameter names"),
    (["-X", "a b"], 'bad parameter name: "a b"'),
])
def test_edit_refuses_bad_names(tmp_path, args, message):
    conf = write_conf(tmp_path, "myorigin = ok\n")
    rc, out, err = tern_conf(*args, config_dir=tmp_path)
    assert rc == 1
    assert err == f"tern: {message}\n"  # one message, no warning first
    assert conf.read_text() == "myorigin = ok\n"


def test_shipped_sample_config_is_valid(tmp_path):
    shutil.copy(REPO / "conf" / "tern.conf", tmp_path / "tern.conf")
    rc, out, err = tern_conf("-n", config_dir=tmp_path)
    assert (rc, err) == (0, "")
    rc, out, err = tern_conf("-x", "smtpd_relay_restrictions", config_dir=tmp_path)
    assert "reject_unauth_destination" in out or "defer_unauth_destination" in out
