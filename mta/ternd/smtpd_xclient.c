/* smtpd_xclient.c - Postfix's XCLIENT extension (XCLIENT_README): a
 * client in smtpd_authorized_xclient_hosts (a test driver or a proxy)
 * replaces the client name, address, port, protocol and HELO name; the
 * session then restarts with a new 220 greeting.
 * Attributes: NAME ADDR PORT PROTO HELO LOGIN REVERSE_NAME (xtext values,
 * [UNAVAILABLE] / [TEMPUNAVAIL] for unknown). Pitfall: nothing changes
 * unless every attribute of the command is valid.
 */
#include "smtpd_int.h"
#include "smtpd_milter.h"

#include "log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

struct xclient_attrs {
	char *name, *addr, *port, *proto, *helo, *rev_name, *login;
	int set_name, set_addr, set_port, set_proto, set_helo, set_rev, set_login;
	int name_status, rev_status; /* as struct smtpd_client */
};

/* RFC 3461 xtext: "+HH" is the byte 0xHH. */
static char *xclient_decode(const char *v)
{
	struct buf b = BUF_INIT;

	for (; *v; v++) {
		if (*v == '+' && isxdigit((unsigned char)v[1]) && isxdigit((unsigned char)v[2])) {
			char hex[3] = {v[1], v[2], 0};
			buf_putc(&b, (int)strtol(hex, NULL, 16));
			v += 2;
		} else {
			buf_putc(&b, *v);
		}
	}
	return buf_detach(&b);
}

static int xclient_unavailable(const char *v)
{
	return strcasecmp(v, "[UNAVAILABLE]") == 0 || strcasecmp(v, "[TEMPUNAVAIL]") == 0;
}

/* [TEMPUNAVAIL]: a temporary lookup failure (4), [UNAVAILABLE]: none (5). */
static int xclient_status(const char *v)
{
	if (strcasecmp(v, "[TEMPUNAVAIL]") == 0)
		return 4;
	return strcasecmp(v, "[UNAVAILABLE]") == 0 ? 5 : 0;
}

static int xclient_addr(const char *v, char **out)
{
	struct inet_addr ip;
	struct buf b = BUF_INIT;
	int v6 = strncasecmp(v, "IPV6:", 5) == 0;

	if (inet_addr_parse(v6 ? v + 5 : v, &ip) < 0 || (ip.family == AF_INET6) != v6)
		return -1;
	inet_addr_format(&ip, &b);
	*out = buf_detach(&b);
	return 0;
}

static int xclient_host(const char *v)
{
	struct buf err = BUF_INIT;
	int ok = addr_domain_check(v, 0, &err) == ADDR_OK;

	buf_free(&err);
	return ok;
}

/* One NAME=value: 0, or -1 with the reply sent. */
static int xclient_attr(struct smtpd_session *s, struct xclient_attrs *a, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char *name = eq ? xstrndup(arg, (size_t)(eq - arg)) : xstrdup(arg);
	char *val = eq ? xclient_decode(eq + 1) : NULL;
	int rc = -1, unav;
	char *end;

	/* Decoded xtext may hold CR/LF: never let it reach a header, a log
	 * line or a reply as is. */
	if (val != NULL)
		smtpd_printable(val);
	unav = val && xclient_unavailable(val);
	if (val == NULL) {
		smtpd_reply(s, "501 5.5.4 Error: attribute=value expected");
	} else if (strlen(val) > 255) {
		smtpd_reply(s, "501 5.5.4 Error: attribute value too long");
	} else if (strcasecmp(name, "NAME") == 0 || strcasecmp(name, "REVERSE_NAME") == 0) {
		if (!unav && !xclient_host(val))
			smtpd_reply(s, "501 5.5.4 Bad %s syntax: %s", name, val);
		else if (strcasecmp(name, "NAME") == 0)
			rc = 0, free(a->name), a->name = xstrdup(unav ? "unknown" : val),
			a->set_name = 1, a->name_status = xclient_status(val);
		else
			rc = 0, free(a->rev_name), a->rev_name = xstrdup(unav ? "unknown" : val),
			a->set_rev = 1, a->rev_status = xclient_status(val);
	} else if (strcasecmp(name, "ADDR") == 0) {
		free(a->addr), a->addr = NULL;
		if (unav || xclient_addr(val, &a->addr) < 0)
			smtpd_reply(s, "501 5.5.4 Bad ADDR syntax: %s", val);
		else
			rc = 0, a->set_addr = 1;
	} else if (strcasecmp(name, "PORT") == 0) {
		long p = unav ? 0 : strtol(val, &end, 10);
		if (!unav && (!isdigit((unsigned char)*val) || *end || p < 0 || p > 65535))
			smtpd_reply(s, "501 5.5.4 Bad PORT syntax: %s", val);
		else
			rc = 0, free(a->port), a->port = xstrdup(unav ? "0" : val), a->set_port = 1;
	} else if (strcasecmp(name, "PROTO") == 0) {
		if (strcasecmp(val, "SMTP") && strcasecmp(val, "ESMTP"))
			smtpd_reply(s, "501 5.5.4 Bad PROTO syntax: %s", val);
		else
			rc = 0, free(a->proto), a->proto = xstrdup(val), a->set_proto = 1;
	} else if (strcasecmp(name, "HELO") == 0) {
		if (!unav && (strlen(val) > 255 || strpbrk(val, " \t<>") != NULL))
			smtpd_reply(s, "501 5.5.4 Bad HELO syntax: %s", val);
		else
			rc = 0, free(a->helo), a->helo = unav ? NULL : xstrdup(val),
			a->set_helo = 1;
	} else if (strcasecmp(name, "LOGIN") == 0) { /* the SASL login (sasl_method XCLIENT) */
		rc = 0, free(a->login), a->login = unav ? NULL : xstrdup(val), a->set_login = 1;
	} else if (strcasecmp(name, "DESTADDR") == 0 || strcasecmp(name, "DESTPORT") == 0) {
		rc = 0; /* accepted; the server side is unchanged */
	} else {
		smtpd_reply(s, "501 5.5.4 Bad XCLIENT attribute name: %s", name);
	}
	free(name);
	free(val);
	return rc;
}

static void xclient_apply(struct smtpd_session *s, struct xclient_attrs *a)
{
	char *name = xstrdup(a->set_name ? a->name : s->client.name);
	char *addr = xstrdup(a->set_addr ? a->addr : s->client.addr);
	char *port = xstrdup(a->set_port ? a->port : s->client.port);

	/* NAME leaves the reverse name alone (Postfix xclient_cmd()). */
	char *rev = xstrdup(a->set_rev ? a->rev_name : s->client.rev_name);
	int status = a->set_name ? a->name_status : s->client.name_status;
	int rev_status = a->set_rev ? a->rev_status : s->client.rev_status;

	smtpd_client_set(&s->client, name, addr, port, s->conf->port_logging);
	free(s->client.rev_name);
	s->client.rev_name = rev;
	s->client.name_status = status;
	s->client.rev_status = rev_status;
	free(name);
	free(addr);
	free(port);
	smtpd_txn_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	if (a->set_helo && a->helo)
		s->helo = xstrdup(a->helo);
	if (a->set_proto)
		s->esmtp = strcasecmp(a->proto, "ESMTP") == 0;
	if (a->set_login) {
		smtpd_sasl_reset(s);
		if (a->login) {
			s->sasl_method = xstrdup("XCLIENT");
			s->sasl_username = xstrdup(a->login);
			smtpd_printable(s->sasl_username);
		}
	}
	s->xclient_done = 1;
}

int smtpd_xclient_cmd(struct smtpd_session *s, int argc, char **argv)
{
	struct xclient_attrs a;
	int rc = 0;

	memset(&a, 0, sizeof(a));
	if (s->in_mail) {
		smtpd_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return -1;
	}
	if (argc < 2) {
		smtpd_reply(s, "501 5.5.4 Syntax: XCLIENT attribute=value...");
		return -1;
	}
	if (!smtpd_client_trusted(s, s->conf->xclient_hosts)) {
		smtpd_reply(s, "550 5.7.0 Error: insufficient authorization");
		return -1;
	}
	for (int i = 1; i < argc && rc == 0; i++)
		rc = xclient_attr(s, &a, argv[i]);
	if (rc == 0) {
		xclient_apply(s, &a);
		/* A new client: smtpd_delay_reject = no checks it now. */
		free(s->access_denied);
		s->access_denied = NULL;
		s->check_cmd = SMTPD_C_XCLIENT;
		if (smtpd_check_has(s->conf, SMTPD_STAGE_CONNECT) ||
		    smtpd_milter_conf_count(s->conf->milters) > 0) /* milters: CONNECT again */
			rc = SMTPD_CMD_PENDING;
		smtpd_session_connect_check(s, rc == SMTPD_CMD_PENDING);
	}
	free(a.name);
	free(a.addr);
	free(a.port);
	free(a.proto);
	free(a.helo);
	free(a.rev_name);
	free(a.login);
	return rc;
}
