/* dkim_ar.c - Authentication-Results (RFC 8601) for DKIM signatures.
 *
 * One "dkim=" result per signature, as opendkim composes them
 * (milter-policy-ecosystem.md §3.3): pass, fail (with reason), policy (key
 * too small), temperror (DNS), permerror (no key, bad syntax), neutral,
 * then "(N-bit key)" and header.d/i/a/s/b. libopendkim has no per-
 * signature result call: it is derived from flags, body-hash status and
 * the error code. Each result goes on its own folded line.
 */
#include "dkim_milter.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int dkim_ar_tempfailed(DKIM_SIGINFO *sig, const struct dkim_lookup_ctx *lc)
{
	char name[300];

	if (lc == NULL || lc->ntempfail == 0)
		return 0;
	snprintf(name, sizeof(name), "%s._domainkey.%s", (char *)dkim_sig_getselector(sig),
		 (char *)dkim_sig_getdomain(sig));
	for (int i = 0; i < lc->ntempfail; i++)
		if (strcasecmp(lc->tempfail[i], name) == 0)
			return 1;
	return 0;
}

const char *dkim_ar_result(DKIM *dkim, DKIM_SIGINFO *sig, const struct dkim_lookup_ctx *lc)
{
	unsigned int flags = dkim_sig_getflags(sig);
	int err = dkim_sig_geterror(sig);

	(void)dkim;
	if (dkim_ar_tempfailed(sig, lc))
		return "temperror";
	if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
		return "pass";
	if (err == DKIM_SIGERROR_KEYFAIL || err == DKIM_SIGERROR_DNSSYNTAX ||
	    err == DKIM_SIGERROR_MULTIREPLY)
		return "temperror";
	if (err == DKIM_SIGERROR_KEYTOOSMALL)
		return "policy";
	/* No usable key is a permanent error (RFC 6376 §6.1.2 PERMFAIL), not
	 * a failed signature, though libopendkim marks it processed. */
	switch (err) {
	case DKIM_SIGERROR_NOKEY:
	case DKIM_SIGERROR_KEYVERSION:
	case DKIM_SIGERROR_KEYUNKNOWNHASH:
	case DKIM_SIGERROR_KEYHASHMISMATCH:
	case DKIM_SIGERROR_NOTEMAILKEY:
	case DKIM_SIGERROR_KEYTYPEMISSING:
	case DKIM_SIGERROR_KEYTYPEUNKNOWN:
	case DKIM_SIGERROR_KEYREVOKED:
	case DKIM_SIGERROR_KEYDECODE:
		return "permerror";
	default:
		break;
	}
	if (flags & DKIM_SIGFLAG_PROCESSED)
		return "fail";
	if (err != DKIM_SIGERROR_OK)
		return "permerror";
	return "neutral";
}

/* A pvalue: as is when it is a token, else a quoted-string (RFC 2045
 * tspecials; RFC 8601 §2.2). */
static void dkim_ar_value(const char *v, struct buf *out)
{
	if (*v && strpbrk(v, "()<>@,;:\\\"/[]?= \t") == NULL) {
		buf_puts(out, v);
		return;
	}
	buf_putc(out, '"');
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			buf_putc(out, '\\');
		buf_putc(out, *v);
	}
	buf_putc(out, '"');
}

void dkim_ar_sig(DKIM *dkim, DKIM_SIGINFO *sig, const struct dkim_lookup_ctx *lc, struct buf *out)
{
	const char *result = dkim_ar_result(dkim, sig, lc);
	const char *alg = (const char *)dkim_sig_getalgorithm(sig);
	const char *sel = (const char *)dkim_sig_getselector(sig);
	unsigned int bits = 0;
	u_char ident[512];
	char b[16];
	size_t blen = 8;

	buf_printf(out, "dkim=%s", result);
	if (strcmp(result, "pass") && strcmp(result, "neutral")) {
		int err = dkim_sig_geterror(sig);
		const char *why =
		    err == DKIM_SIGERROR_OK && dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH
			? "body hash did not verify"
			: dkim_sig_geterrorstr(err);

		if (dkim_ar_tempfailed(sig, lc))
			why = "key lookup failed temporarily";
		if (why) {
			buf_puts(out, " reason=");
			dkim_ar_value(why, out);
		}
	}
	if (dkim_sig_getkeysize(sig, &bits) == DKIM_STAT_OK && bits)
		buf_printf(out, " (%u-bit key)", bits);
	buf_printf(out, " header.d=%s", (const char *)dkim_sig_getdomain(sig));
	if (dkim_sig_getidentity(dkim, sig, ident, sizeof(ident)) == DKIM_STAT_OK && *ident)
		buf_printf(out, " header.i=%s", (const char *)ident);
	if (alg && *alg)
		buf_printf(out, " header.a=%s", alg);
	if (sel && *sel) {
		buf_puts(out, " header.s=");
		dkim_ar_value(sel, out);
	}
	if (dkim_get_sigsubstring(dkim, sig, b, &blen) == DKIM_STAT_OK && blen > 0) {
		b[blen < sizeof(b) ? blen : sizeof(b) - 1] = 0;
		buf_puts(out, " header.b=");
		dkim_ar_value(b, out);
	}
}

void dkim_ar_compose(const char *authserv_id, char **results, size_t n, struct buf *out)
{
	buf_printf(out, " %s", authserv_id);
	if (n == 0)
		buf_puts(out, ";\n\tdkim=none");
	for (size_t i = 0; i < n; i++)
		buf_printf(out, ";\n\t%s", results[i]);
}
