"""test_postmap_diff.py - Tern's lookup tables against real Postfix.

Every table in postmap_corpus/ is queried key by key with Postfix's
"postmap -q KEY type:file" and with "tern map query -q KEY type:file";
stdout and the found (0) / not-found (1) exit status must be identical,
and so must the stdin form ("postmap -q - type:file" against "tern map
query type:file < keys"). hash: and cdb: tables are built by each side
in its own copy (Postfix writes FILE.db or FILE.cdb, Tern FILE.cdb).
Tables named bad_* hold one broken rule: both sides must complain, and
Tern must name the file and the line Postfix names. See README.md.
"""

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import harness

CORPUS = Path(__file__).resolve().parent / "postmap_corpus"
FILE_TYPES = ("texthash", "hash", "cdb", "cidr", "pcre", "regexp")
BUILT_TYPES = ("hash", "cdb")  # indexed: "postmap TYPE:FILE" / "tern map build"
POSTMAP = "/usr/sbin/postmap"
TIMEOUT = 60
# ASan/UBSan reports (SAN=1 builds): a crash after a "not found" answer
# would otherwise look like an ordinary exit status 1.
SANITIZER_RE = re.compile(rb"Sanitizer|runtime error:")


# --- the corpus ----------------------------------------------------------------


def corpus_tables(bad):
    """(type, name) of every table file, the bad_* ones or the good ones."""
    out = []
    for ty in FILE_TYPES:
        for p in sorted((CORPUS / ty).iterdir()):
            if p.suffix in (".keys", ".qkeys") or p.name.startswith(".") or not p.is_file():
                continue
            if p.name.startswith("bad_") == bad:
                out.append((ty, p.name))
    return out


def corpus_specs():
    """(name, spec) from specs.list: inline:, static: and type:{...}."""
    out = []
    for line in (CORPUS / "specs.list").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, spec = line.split(None, 1)
        out.append((name, spec.strip()))
    return out


def read_keys(path):
    """Keys, one per line and verbatim (blanks, CR and '#' included);
    only empty lines are skipped: the stdin form could not send them."""
    data = path.read_bytes().decode("utf-8", "surrogateescape")
    return [k for k in data.split("\n") if k != ""]


def read_qkeys(path):
    """-q only keys, with \\n, \\t and \\\\ escapes; '#' lines are comments."""
    if not path.exists():
        return []
    unescape = {"n": "\n", "t": "\t", "\\": "\\"}
    keys = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            keys.append(re.sub(r"\\(.)", lambda m: unescape.get(m.group(1), m.group(0)), line))
    return keys


def table_id(param):
    return "%s:%s" % param


# --- running both sides ---------------------------------------------------


def _run(argv, input=None, cwd=None, env=None):
    proc = subprocess.run(argv, input=input, capture_output=True, cwd=cwd, env=env,
                          timeout=TIMEOUT,
                          stdin=None if input is not None else subprocess.DEVNULL)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def postfix_conf(tmp_path_factory):
    """A private Postfix config dir for "postmap -c": the Debian default
    compatibility level (so smtputf8_enable = yes, as on a fresh install),
    and no dependence on whatever /etc/postfix/main.cf says today."""
    d = tmp_path_factory.mktemp("postfix-conf")
    (d / "main.cf").write_text("compatibility_level = 3.6\n")
    return d


class Side:
    """One implementation: run(args..., input=) -> (rc, stdout, stderr)."""

    def __init__(self, name, argv0, workdir, env=None):
        self.name, self.argv0, self.workdir, self.env = name, argv0, workdir, env

    def run(self, *args, input=None):
        return _run(self.argv0 + list(args), input=input, cwd=self.workdir, env=self.env)


@pytest.fixture
def sides(tmp_path, postfix_conf, config_dir):
    tern = harness.tern_bin("tern")
    if not os.access(tern, os.X_OK):
        pytest.fail("%s is not built (make build/bin/tern)" % tern, pytrace=False)
    pf_dir, tn_dir = tmp_path / "postfix", tmp_path / "tern"
    pf_dir.mkdir()
    tn_dir.mkdir()
    env = dict(os.environ, TERN_CONFIG_DIR=str(config_dir))
    postfix = Side("postmap", [POSTMAP, "-c", str(postfix_conf)], pf_dir)
    postfix.query = lambda spec, *a, **kw: postfix.run("-q", *a, spec, **kw)
    postfix.build = lambda spec: postfix.run(spec)
    tern_side = Side("tern", [str(tern)], tn_dir, env)
    tern_side.query = lambda spec, *a, **kw: tern_side.run("map", "query", *(("-q",) + a if a else ()), spec, **kw)
    tern_side.build = lambda spec: tern_side.run("map", "build", spec)
    return postfix, tern_side


def install_table(side, ty, name):
    """Copy the corpus table into the side's own directory (and build it
    for hash:/cdb:); returns (spec, build result or None)."""
    dst = side.workdir / name
    shutil.copyfile(CORPUS / ty / name, dst)
    spec = "%s:%s" % (ty, dst)
    built = side.build(spec) if ty in BUILT_TYPES else None
    return spec, built


def show(data, limit=300):
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "...")


def compare_keys(postfix, pf_spec, tern, tn_spec, keys):
    """Query each key on both sides; returns readable mismatch lines."""
    problems = []
    for key in keys:
        prc, pout, perr = postfix.query(pf_spec, key)
        trc, tout, terr = tern.query(tn_spec, key)
        assert prc in (0, 1), "postmap failed on key %r: %s" % (key, show(perr))
        if SANITIZER_RE.search(terr) or trc < 0:
            problems.append("key %s: tern crashed (rc=%d): %s" % (show(key), trc, show(terr, 2000)))
            continue
        if (prc, pout) != (trc, tout):
            problems.append("key %s: postmap rc=%d %s, tern rc=%d %s%s" % (
                show(key), prc, show(pout), trc, show(tout),
                ("  [tern stderr: %s]" % show(terr)) if terr else ""))
    return problems


def compare_stdin(postfix, pf_spec, tern, tn_spec, keys):
    data = "".join(k + "\n" for k in keys).encode("utf-8", "surrogateescape")
    prc, pout, perr = postfix.query(pf_spec, "-", input=data)
    trc, tout, terr = tern.run("map", "query", tn_spec, input=data)
    assert prc in (0, 1), "postmap -q - failed: %s" % show(perr)
    if SANITIZER_RE.search(terr) or trc < 0:
        return ["stdin form: tern crashed (rc=%d): %s" % (trc, show(terr, 2000))]
    if pout == tout:
        return []
    plines = pout.decode("utf-8", "replace").split("\n")
    tlines = tout.decode("utf-8", "replace").split("\n")
    diff = ["stdin form differs (postmap rc=%d, tern rc=%d, tern stderr %s):" % (prc, trc, show(terr))]
    diff += ["  " + repr(d)[1:-1] for d in difflib.unified_diff(
        plines, tlines, "postmap", "tern", n=1, lineterm="")]
    return diff


# --- good tables: identical answers ------------------------------------------


@pytest.mark.parametrize("table", corpus_tables(bad=False), ids=table_id)
def test_query_keys(sides, table):
    postfix, tern = sides
    ty, name = table
    pf_spec, pf_built = install_table(postfix, ty, name)
    tn_spec, tn_built = install_table(tern, ty, name)
    if tn_built is not None:
        assert tn_built[0] == 0, "tern map build %s failed: %s" % (tn_spec, show(tn_built[2]))
    keys = read_keys(CORPUS / ty / (name + ".keys")) + read_qkeys(CORPUS / ty / (name + ".qkeys"))
    problems = compare_keys(postfix, pf_spec, tern, tn_spec, keys)
    assert not problems, "%s:%s differs from Postfix:\n" % table + "\n".join(problems)


@pytest.mark.parametrize("table", corpus_tables(bad=False), ids=table_id)
def test_query_stdin(sides, table):
    postfix, tern = sides
    ty, name = table
    pf_spec, _ = install_table(postfix, ty, name)
    tn_spec, _ = install_table(tern, ty, name)
    keys = read_keys(CORPUS / ty / (name + ".keys"))
    problems = compare_stdin(postfix, pf_spec, tern, tn_spec, keys)
    assert not problems, "%s:%s differs from Postfix:\n" % table + "\n".join(problems)


@pytest.mark.parametrize("name,spec", corpus_specs(), ids=[n for n, _ in corpus_specs()])
def test_query_spec(sides, name, spec):
    postfix, tern = sides
    keys = read_keys(CORPUS / "specs" / (name + ".keys"))
    problems = compare_keys(postfix, spec, tern, spec, keys)
    problems += compare_stdin(postfix, spec, tern, spec, keys)
    assert not problems, "%s differs from Postfix:\n" % spec + "\n".join(problems)


# --- bad tables: both complain, same line ------------------------------------

LINE_RE = re.compile(rb"line (\d+)")


def line_numbers(stderr):
    """Line numbers in the order first mentioned."""
    seen = []
    for m in LINE_RE.finditer(stderr):
        n = int(m.group(1))
        if n not in seen:
            seen.append(n)
    return seen


@pytest.mark.parametrize("table", corpus_tables(bad=True), ids=table_id)
def test_bad_table_reported(sides, table):
    """Postfix warns and skips the rule; Tern may skip it or refuse the
    table, but must say which file and which line, and must not crash."""
    postfix, tern = sides
    ty, name = table
    pf_spec, pf_built = install_table(postfix, ty, name)
    tn_spec, tn_built = install_table(tern, ty, name)
    keys = "".join(k + "\n" for k in read_keys(CORPUS / ty / (name + ".keys"))).encode()
    if ty in BUILT_TYPES:  # the build is where the file is parsed
        pf_err, tn = pf_built[2], tn_built
    else:
        pf_err = postfix.query(pf_spec, "-", input=keys)[2]
        tn = tern.run("map", "query", tn_spec, input=keys)
    pf_lines = line_numbers(pf_err)
    assert pf_lines, "corpus error: postmap does not complain about %s: %s" % (name, show(pf_err))
    trc, terr = tn[0], tn[2]
    assert trc >= 0, "tern killed by signal %d; stderr %s" % (-trc, show(terr))
    assert not SANITIZER_RE.search(terr), show(terr, 2000)
    tn_lines = line_numbers(terr)
    assert name.encode() in terr, "tern does not name the file; postmap said %s, tern said %s" % (
        show(pf_err), show(terr))
    assert pf_lines[0] in tn_lines, "postmap complains about line %d, tern %s: %s" % (
        pf_lines[0], tn_lines, show(terr))
    assert set(tn_lines) <= set(pf_lines), "tern names lines %s, postmap only %s: %s" % (
        tn_lines, pf_lines, show(terr))


# --- the corpus itself (Postfix side only) ----------------------------------


@pytest.mark.parametrize("table", corpus_tables(bad=False), ids=table_id)
def test_corpus_postfix_side(tmp_path, postfix_conf, table):
    """Each good table loads without complaint (duplicates excepted) and
    has found and not-found keys, so the differential test means
    something even before Tern's side exists."""
    ty, name = table
    postfix = Side("postmap", [POSTMAP, "-c", str(postfix_conf)], tmp_path)
    postfix.build = lambda spec: postfix.run(spec)
    spec, built = install_table(postfix, ty, name)
    warnings = [w for w in ((built[2] if built else b"") +
                            postfix.run("-q", "-", spec, input=b"probe\n")[2]).split(b"\n")
                if w and b"duplicate entry" not in w]
    assert not warnings, "postmap complains about %s: %s" % (name, warnings[:3])
    found = notfound = 0
    for key in read_keys(CORPUS / ty / (name + ".keys")):
        rc = postfix.run("-q", key, spec)[0]
        assert rc in (0, 1)
        found += rc == 0
        notfound += rc == 1
    assert found >= 3 and notfound >= 1, "%s: %d found, %d not found" % (name, found, notfound)


def test_corpus_has_every_type():
    good = {ty for ty, _ in corpus_tables(bad=False)}
    assert good == set(FILE_TYPES)
    kinds = {spec.split(":", 1)[0] for _, spec in corpus_specs()}
    assert {"inline", "static", "pcre", "regexp", "cidr"} <= kinds
    for ty, name in corpus_tables(bad=False) + corpus_tables(bad=True):
        assert (CORPUS / ty / (name + ".keys")).exists(), "%s/%s has no keys file" % (ty, name)
