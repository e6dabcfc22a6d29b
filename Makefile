# Tern top-level Makefile: builds libtern (shared/) and every program
# (mta/, policyd/, milters/) into build/, runs the tests, installs.
#
#   make            build everything
#   make deps       install the Debian packages the build, programs and tests need
#   make check      deps + build + unit + integration tests
#   make run        deps + build + ternd in the foreground from ./run (conf/run)
#   make install    PREFIX=/usr/local DESTDIR= SYSCONFDIR=/etc/tern
#   SAN=1           build with ASan+UBSan (objects in build/san/)
#   CC=clang        any C11 compiler with gcc-compatible flags

CC      ?= cc
PREFIX  ?= /usr/local
SYSCONFDIR ?= /etc/tern
DESTDIR ?=
PYTHON  ?= /usr/bin/python3
SAN     ?= 0

ifeq ($(SAN),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1
else
BUILD   := build
SANFLAGS :=
OPT     := -O2
endif

PKGS    := libpcre2-8 libunbound sqlite3 libevent libevent_pthreads libevent_openssl openssl icu-uc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
HARDEN  := -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
CFLAGS  ?=
CFLAGS  += -std=gnu11 $(WARN) $(OPT) -g $(HARDEN) $(SANFLAGS) -Ishared $(PKG_CFLAGS) -MMD -MP
LDFLAGS += -pie -Wl,-z,relro -Wl,-z,now $(SANFLAGS)
# -lcrypt: crypt(3) for SMTP AUTH password files (smtpd_sasl.c, tern passwd)
LDLIBS  := $(PKG_LIBS) -lcdb -lpthread -lcrypt

# libtern: every .c in shared/ except test doubles.
LIB_SRC := $(wildcard shared/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIBTERN := $(BUILD)/libtern.a

# Programs: one directory each; the program is named after its directory.
# Later issues add mta/ternd, policyd/, milters/* here.
PROG_DIRS := $(sort $(dir $(wildcard mta/*/main.c policyd/main.c milters/*/main.c)))
# Program name from its directory: mta/X/ -> X, policyd/ -> tern-policyd,
# milters/X/ -> tern-X-milter.
prog_name = $(if $(filter policyd/,$(1)),tern-policyd,$(if $(filter milters/%,$(1)),tern-$(notdir $(patsubst %/,%,$(1)))-milter,$(notdir $(patsubst %/,%,$(1)))))
PROGRAMS  := $(foreach d,$(PROG_DIRS),$(BUILD)/bin/$(call prog_name,$(d)))

# Unit tests: tests/unit/test_<module>.c, each its own cmocka binary.
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# Test tools: tests/tools/<name>.c, small programs the integration tests drive.
TOOL_SRC  := $(wildcard tests/tools/*.c)
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/%)
# LD_PRELOAD shims: tests/tools/preload/<name>.c -> $(BUILD)/tests/<name>.so
# (no sanitizers: they are preloaded into sanitized programs too).
TOOL_BIN  += $(patsubst tests/tools/preload/%.c,$(BUILD)/tests/%.so,$(wildcard tests/tools/preload/*.c))

.PHONY: all deps check tests unit integration install clean format run run-tls bench bench-policyd
all: $(LIBTERN) $(PROGRAMS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBTERN): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# A program needing more libraries than every program sets LIBS_<name>
# (e.g. LIBS_tern-dkim-milter := -lmilter -lopendkim) next to its rules.
define program_rule
$(BUILD)/bin/$(call prog_name,$(1)): $(patsubst %.c,$(BUILD)/%.o,$(wildcard $(1)*.c)) $(LIBTERN)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(LIBTERN) $$(LIBS_$(call prog_name,$(1))) $$(LDLIBS)
endef
$(foreach d,$(PROG_DIRS),$(eval $(call program_rule,$(d))))

# Tern's milters (milters/<name>/): libmilter, plus the plumbing they
# share in milters/common/ (start, config, socket, privileges, logging).
MILTER_COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard milters/common/*.c))
$(foreach d,$(filter milters/%,$(PROG_DIRS)),$(eval $(BUILD)/bin/$(call prog_name,$(d)): $(MILTER_COMMON_OBJ)))
$(BUILD)/milters/%.o: CFLAGS += -Imilters/common
LIBS_tern-dkim-milter := -lmilter -lopendkim -lcrypto
LIBS_tern-archive-milter := -lmilter
LIBS_tern-rules-milter := -lmilter
LIBS_tern-spf-milter := -lmilter -lspf2
# The rules milter's pure parts (actions, MIME walk) have a unit test.
RULES_MILTER_OBJ := $(BUILD)/milters/rules/rules_action.o $(BUILD)/milters/rules/rules_mime.o
$(BUILD)/tests/unit/test_milter_rules.o: CFLAGS += -Imilters/rules
$(BUILD)/tests/test_milter_rules: $(BUILD)/tests/unit/test_milter_rules.o $(RULES_MILTER_OBJ) $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(RULES_MILTER_OBJ) $(LIBTERN) $(LDLIBS) -lcmocka

# The DKIM milter's key caches (libopendkim's key decodes answered from them).
DKIM_KEYCACHE_OBJ := $(BUILD)/milters/dkim/dkim_keycache.o $(BUILD)/milters/dkim/dkim_pubcache.o
$(BUILD)/tests/unit/test_dkim_keycache.o: CFLAGS += -Imilters/dkim
$(BUILD)/tests/test_dkim_keycache: $(BUILD)/tests/unit/test_dkim_keycache.o $(DKIM_KEYCACHE_OBJ) $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(DKIM_KEYCACHE_OBJ) $(LIBTERN) $(LDLIBS) -lopendkim -lcrypto -lcmocka

# tern-policyd: SPF (shared/spf.c), LMDB and Redis state.
LIBS_tern-policyd := -lspf2 -llmdb -lhiredis
$(BUILD)/tests/test_spf: LDLIBS += -lspf2
# Its modules are unit-tested: test_policyd_<x>.c links every policyd
# object but main.o.
POLICYD_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out policyd/main.c,$(wildcard policyd/*.c)))
$(BUILD)/tests/unit/test_policyd_%.o: CFLAGS += -Ipolicyd
$(BUILD)/tests/test_policyd_%: $(BUILD)/tests/unit/test_policyd_%.o $(POLICYD_OBJ) $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(POLICYD_OBJ) $(LIBTERN) $(LDLIBS) $(LIBS_tern-policyd) -lcmocka
# Its protocol fuzz target (clang, libFuzzer): every source compiled with
# coverage, so the fuzzer sees inside the checks.
$(BUILD)/fuzz/fuzz_policyd: tests/fuzz/fuzz_policyd.c $(filter-out policyd/main.c,$(wildcard policyd/*.c)) $(LIB_SRC)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -g -O1 -Ishared -Ipolicyd -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS) $(LIBS_tern-policyd)

# "tern queue" reads (and, with ternd stopped, changes) the queue itself.
$(BUILD)/bin/tern: $(patsubst %.c,$(BUILD)/%.o,$(wildcard mta/ternd/queue*.c))
# "tern explain" runs ternd's access-check engine (smtpd_*.c).
$(BUILD)/bin/tern: $(patsubst %.c,$(BUILD)/%.o,$(wildcard mta/ternd/smtpd_*.c))
# ... and the milter client in it resolves routes ({rcpt_mailer} macros).
$(BUILD)/bin/tern: $(BUILD)/mta/ternd/route.o

# ternd's own modules are unit-tested too: test_ternd_<x>.c links every
# ternd object but main.o.
TERND_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(filter-out mta/ternd/main.c,$(wildcard mta/ternd/*.c)))
$(BUILD)/tests/test_ternd_%: $(BUILD)/tests/unit/test_ternd_%.o $(TERND_OBJ) $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(TERND_OBJ) $(LIBTERN) $(LDLIBS) -lcmocka

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBTERN) $(LDLIBS) -lcmocka

$(BUILD)/tests/%: $(BUILD)/tests/tools/%.o $(LIBTERN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBTERN) $(LDLIBS)

$(BUILD)/tests/%.so: tests/tools/preload/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -fPIC -shared -o $@ $< -ldl

# Debian 12 packages, by reason (see the README's dependency table).
DEPS_BUILD := build-essential pkg-config clang libevent-dev libssl-dev \
	libunbound-dev libmilter-dev libopendkim-dev libspf2-dev libpcre2-dev \
	libcdb-dev liblmdb-dev libhiredis-dev libsqlite3-dev libcmocka-dev libicu-dev
DEPS_TEST  := python3 python3-pytest python3-milter python3-dkim sqlite3 \
	postfix postfix-pcre postfix-cdb swaks dnsmasq opendkim opendkim-tools \
	postgrey postfix-policyd-spf-python pflogsumm redis-server dovecot-core
# Daemons the test peers bring along: installed, never left running or enabled.
# As root, deps also creates the system user "tern" (mail_owner's default).
DEPS_DAEMONS := postfix opendkim postgrey dnsmasq redis-server dovecot

deps:
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(DEPS_BUILD) $(DEPS_TEST) 2>/dev/null \
		| awk '$$2 != "installed" {print $$1}'; \
		for p in $(DEPS_BUILD) $(DEPS_TEST); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing $$(echo $$missing | tr '\n' ' ')"; \
		printf '#!/bin/sh\nexit 101\n' > /tmp/tern-policy-rc.d; \
		[ -e /usr/sbin/policy-rc.d ] || { cp /tmp/tern-policy-rc.d /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; rmpol=1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$(echo $$missing | sort -u) >/tmp/tern-deps.log 2>&1 \
		|| { apt-get update -q >>/tmp/tern-deps.log 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$(echo $$missing | sort -u) >>/tmp/tern-deps.log 2>&1; } \
		|| { cat /tmp/tern-deps.log; [ -z "$$rmpol" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }; \
		[ -z "$$rmpol" ] || rm -f /usr/sbin/policy-rc.d; \
	fi; \
	for d in $(DEPS_DAEMONS); do \
		if [ -e /etc/systemd/system/multi-user.target.wants/$$d.service ]; then \
			systemctl disable $$d >/dev/null 2>&1 || rm -f /etc/systemd/system/multi-user.target.wants/$$d.service; fi; \
		if [ -x /etc/init.d/$$d ] && ls /etc/rc2.d/S*$$d >/dev/null 2>&1; then update-rc.d $$d disable >/dev/null 2>&1 || true; fi; \
	done; \
	pkill -x -f '/usr/lib/postfix/sbin/master -w' 2>/dev/null; \
	if [ "$$(id -u)" = 0 ] && ! getent passwd tern >/dev/null; then \
		useradd --system --home-dir /var/spool/tern --no-create-home \
			--shell /usr/sbin/nologin tern; fi; \
	for d in opendkim postgrey dnsmasq; do \
		pidf=/run/$$d/$$d.pid; [ -f $$pidf ] && kill $$(cat $$pidf) 2>/dev/null; \
	done; true

# deps first, then a fresh make: pkg-config flags are read at parse time and
# on a new machine the packages only exist once deps has run.
check:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all tests
	@$(MAKE) --no-print-directory unit integration

tests: $(UNIT_BIN) $(TOOL_BIN)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ./$$t; done

integration: all $(TOOL_BIN)
	TERN_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration

# Programs into $(PREFIX)/sbin, samples and docs under $(PREFIX)/share;
# the sample tern.conf goes to $(SYSCONFDIR) only if there is none: an
# install never overwrites an admin's configuration.
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/tern/conf \
		$(DESTDIR)$(PREFIX)/share/doc/tern $(DESTDIR)$(SYSCONFDIR)
	for p in $(PROGRAMS); do install -m 755 $$p $(DESTDIR)$(PREFIX)/sbin/; done
	# One binary: sbin/sendmail; mailq and newaliases where Debian puts them.
	install -d $(DESTDIR)$(PREFIX)/bin
	for l in mailq newaliases; do ln -sf ../sbin/sendmail $(DESTDIR)$(PREFIX)/bin/$$l; done
	install -m 644 conf/*.conf $(DESTDIR)$(PREFIX)/share/tern/conf/
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/tern/
	[ -e $(DESTDIR)$(SYSCONFDIR)/tern.conf ] || install -m 644 conf/tern.conf $(DESTDIR)$(SYSCONFDIR)/tern.conf

# make run: the embedded default, unprivileged, in the foreground.
# conf/run/tern.conf is copied to run/ (kept if run/tern.conf is newer, so
# local edits survive); queue, data and maildirs live under run/.
run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	@mkdir -p run/mail
	@[ run/tern.conf -nt conf/run/tern.conf ] || cp conf/run/tern.conf run/tern.conf
	@$(MAKE) --no-print-directory run-tls RUNDIR=run
	@# As root, ternd drops to the unprivileged "tern" user (made by deps);
	@# otherwise it runs as whoever started it.
	@if [ "$$(id -u)" = 0 ]; then $(BUILD)/bin/tern conf -c run -e mail_owner=tern >/dev/null; \
		chown -R tern run; else $(BUILD)/bin/tern conf -c run -e mail_owner=$$(id -un) >/dev/null; fi
	@$(BUILD)/bin/tern check -c run
	@echo "Tern runs in the foreground on 127.0.0.1:2525, config run/tern.conf (Ctrl-C stops it)."
	@echo "Send a first message with swaks:"
	@echo "  swaks --server 127.0.0.1:2525 --from you@example.org --to joe@example.test"
	@echo "or by hand (seed 000; a bare 'joe' becomes joe@example.test):"
	@echo "  telnet 127.0.0.1 2525"
	@echo "  ehlo me"
	@echo "  mail from:<you@example.org>"
	@echo "  rcpt to: joe"
	@echo "  data"
	@echo "  Subject: Just a test"
	@echo "  "
	@echo "  This is only a test."
	@echo "  ."
	@echo "  quit"
	@echo "It lands in $(CURDIR)/run/mail/example.test/joe/new/ (alice@example.test: run/mail/example.test/alice/new/)."
	@echo "STARTTLS (seed 001): openssl s_client -connect 127.0.0.1:2525 -starttls smtp"
	@echo "Submission with AUTH PLAIN: openssl s_client -connect 127.0.0.1:2587 -starttls smtp"
	@echo "  ehlo me"
	@echo "  AUTH PLAIN $$(printf '\0alice@example.test\0alice-secret' | base64)"
	@echo "  (or: swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user alice@example.test --auth-password alice-secret --to joe@example.test)"
	exec $(BUILD)/bin/ternd -f -c run

# TLS and AUTH for the sandbox in $(RUNDIR) (docs/tls.md): a self-signed
# certificate for localhost and the demo login alice@example.test /
# alice-secret, each made once (tests/integration/test_smtpd_tls.py runs it).
RUNDIR ?= run
run-tls: $(BUILD)/bin/tern
	@mkdir -p $(RUNDIR)/tls; [ -s $(RUNDIR)/tls/localhost.pem ] || { \
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
			-addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
			-keyout $(RUNDIR)/tls/key.tmp -out $(RUNDIR)/tls/cert.tmp 2>/dev/null && \
		cat $(RUNDIR)/tls/key.tmp $(RUNDIR)/tls/cert.tmp > $(RUNDIR)/tls/localhost.pem && \
		chmod 600 $(RUNDIR)/tls/localhost.pem && rm -f $(RUNDIR)/tls/key.tmp $(RUNDIR)/tls/cert.tmp; }
	@[ -s $(RUNDIR)/sasl_passwd ] || echo alice-secret | \
		$(BUILD)/bin/tern passwd $(RUNDIR)/sasl_passwd alice@example.test

# make bench: Tern vs a private Postfix instance on this machine (root;
# see tests/bench/README.md). Table to stdout, JSON to $(BUILD)/bench.json.
# Then the policy server and the DKIM milter benches (the two targets below).
bench: all $(TOOL_BIN)
	$(PYTHON) tests/bench/bench.py --build $(abspath $(BUILD))
	$(PYTHON) tests/bench/policyd_bench.py --build $(abspath $(BUILD))
	$(PYTHON) tests/bench/milter_dkim_bench.py --build $(abspath $(BUILD))

# tern-policyd vs postgrey and pypolicyd-spf (root; tests/bench/policyd_bench.py).
bench-policyd: all $(TOOL_BIN)
	$(PYTHON) tests/bench/policyd_bench.py --build $(abspath $(BUILD))

# tern-dkim-milter vs opendkim, signing and verifying, against openssl
# speed rsa2048 (tests/bench/milter_dkim_bench.py).
bench-milters: all $(BUILD)/tests/milterload
	$(PYTHON) tests/bench/milter_dkim_bench.py --build $(abspath $(BUILD))

format:
	clang-format -i shared/*.[ch] mta/*/*.[ch] tests/unit/*.[ch]

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
