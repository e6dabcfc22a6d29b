/* cfg_value.c - the list splitter and typed value checks (see cfg.h).
 *
 * Booleans are "yes"/"no" in any case (Postfix's get_mail_conf_bool);
 * time is a number with an optional unit (ms s m h d w, Postfix has no
 * "ms" and no combined "1h30m"); sizes are bytes, with Tern's optional
 * k/m/g (x1024) suffix. Numbers are bounded so no product overflows.
 */
#include "cfg.h"
#include "cfg_impl.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* No setting needs more; keeps unit products far from LLONG_MAX. */
#define CFG_NUM_MAX 1000000000000000LL

static int cfg_is_sep(int ch)
{
	return ch == ',' || isspace((unsigned char)ch);
}

static void cfg_list_add(struct cfg_list *l, const char *s, size_t n)
{
	l->items = xrealloc(l->items, (l->count + 2) * sizeof(*l->items));
	l->items[l->count++] = xstrndup(s, n);
	l->items[l->count] = NULL;
}

int cfg_list_split(const char *value, struct cfg_list *out, struct buf *err)
{
	const char *cp = value;

	out->items = xcalloc(1, sizeof(*out->items));
	out->count = 0;
	for (;;) {
		while (*cp && cfg_is_sep(*cp))
			cp++;
		if (*cp == 0)
			return 0;
		const char *start = cp;
		int depth = 0;
		for (; *cp && (depth > 0 || !cfg_is_sep(*cp)); cp++) {
			if (*cp == '{')
				depth++;
			else if (*cp == '}' && --depth < 0)
				break;
		}
		if (depth != 0) {
			buf_printf(err, "%s in \"%s\"",
				   depth > 0 ? "missing '}'" : "unexpected '}'", start);
			cfg_list_free(out);
			return -1;
		}
		cfg_list_add(out, start, (size_t)(cp - start));
	}
}

void cfg_list_free(struct cfg_list *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

void cfg_list_unbrace(const char *item, struct buf *out)
{
	const char *b = item, *e = item + strlen(item);

	while (isspace((unsigned char)*b))
		b++;
	while (e > b && isspace((unsigned char)e[-1]))
		e--;
	if (e - b >= 2 && *b == '{' && e[-1] == '}') {
		for (b++, e--; isspace((unsigned char)*b); b++)
			;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
	}
	buf_set(out, "");
	buf_append(out, b, (size_t)(e - b));
}

int cfg_parse_bool(const char *s, int *out)
{
	if (strcasecmp(s, "yes") == 0)
		*out = 1;
	else if (strcasecmp(s, "no") == 0)
		*out = 0;
	else
		return -1;
	return 0;
}

/* Leading decimal digits of s as a number; *end after them. */
static int cfg_parse_digits(const char *s, long long *out, const char **end)
{
	long long v = 0;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		v = v * 10 + (*s - '0');
		if (v > CFG_NUM_MAX)
			return -1;
	}
	*out = v;
	*end = s;
	return 0;
}

int cfg_parse_int(const char *s, long long *out)
{
	const char *end;
	int neg = *s == '-';

	if (*s == '-' || *s == '+')
		s++;
	if (cfg_parse_digits(s, out, &end) < 0 || *end)
		return -1;
	if (neg)
		*out = -*out;
	return 0;
}

static long long cfg_unit_ms(const char *u)
{
	static const struct {
		const char *name;
		long long ms;
	} units[] = {
	    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"w", 604800000},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(u, units[i].name) == 0)
			return units[i].ms;
	return 0;
}

int cfg_parse_time_ms(const char *s, const char *unit, long long *ms)
{
	const char *end;
	long long v, mult;

	if (cfg_parse_digits(s, &v, &end) < 0)
		return -1;
	if ((mult = cfg_unit_ms(*end ? end : unit)) == 0)
		return -1;
	if (v > CFG_NUM_MAX / mult)
		return -1;
	*ms = v * mult;
	return 0;
}

int cfg_parse_size(const char *s, long long *out)
{
	const char *end;
	long long v, mult = 1;

	if (cfg_parse_digits(s, &v, &end) < 0)
		return -1;
	switch (tolower((unsigned char)*end)) {
	case 0:
		break;
	case 'k':
		mult = 1024;
		break;
	case 'm':
		mult = 1024 * 1024;
		break;
	case 'g':
		mult = 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end && end[1])
		return -1;
	if (v > CFG_NUM_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

const char *cfg_type_name(enum cfg_type t)
{
	static const char *const names[] = {"string", "boolean", "integer", "time",
					    "size",   "list",	 "tables",  "listen"};
	return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static int cfg_range_check(const struct cfg_param *p, const char *name, long long v,
			   long long scale, struct buf *err)
{
	if (v < p->min * scale) {
		buf_printf(err, "invalid value for parameter \"%s\": must be at least %lld%s", name,
			   p->min, scale > 1 ? "s" : "");
		return -1;
	}
	if (p->max && v > p->max * scale) {
		buf_printf(err, "invalid value for parameter \"%s\": must be at most %lld%s", name,
			   p->max, scale > 1 ? "s" : "");
		return -1;
	}
	return 0;
}

/* A lookup table reference: "type:name" with a lower-case type. */
static int cfg_table_ok(const char *item)
{
	const char *cp = item;

	while (islower((unsigned char)*cp) || isdigit((unsigned char)*cp) || *cp == '_')
		cp++;
	return cp > item && *cp == ':' && cp[1] != 0;
}

/* "port", "*:port", "host:port" or "[v6]:port"; port a number 1..65535
 * or a service name (resolved by the listener). */
static int cfg_listen_ok(const char *item)
{
	const char *port = strrchr(item, ':'), *cp;
	long long n;

	if (port == NULL)
		port = item;
	else if (item[0] == '[') {
		if (port - item < 3 || port[-1] != ']')
			return 0;
		port++;
	} else {
		if (port == item || memchr(item, ':', (size_t)(port - item)))
			return 0; /* bare IPv6 needs [brackets] */
		port++;
	}
	if (cfg_parse_int(port, &n) == 0 && *port != '-' && *port != '+')
		return n >= 1 && n <= 65535;
	for (cp = port; islower((unsigned char)*cp) || isdigit((unsigned char)*cp) || *cp == '-';
	     cp++)
		;
	return cp > port && *cp == 0 && islower((unsigned char)*port);
}

static int cfg_items_check(const struct cfg_param *p, const char *name, const char *value,
			   struct buf *err)
{
	struct cfg_list l;
	int rc = 0;

	if (cfg_list_split(value, &l, err) < 0)
		return -1;
	for (size_t i = 0; i < l.count && rc == 0; i++) {
		if (p->type == CFG_TABLES && !cfg_table_ok(l.items[i])) {
			buf_printf(err, "bad table \"%s\" in parameter \"%s\": expected type:name",
				   l.items[i], name);
			rc = -1;
		} else if (p->type == CFG_LISTEN && !cfg_listen_ok(l.items[i])) {
			buf_printf(err,
				   "bad listener address \"%s\" in parameter \"%s\": expected "
				   "host:port, [ipv6]:port, *:port or port",
				   l.items[i], name);
			rc = -1;
		}
	}
	cfg_list_free(&l);
	return rc;
}

int cfg_value_check(const struct cfg_param *p, const char *name, const char *value, struct buf *err)
{
	long long v;
	int b;

	switch (p->type) {
	case CFG_BOOL:
		if (cfg_parse_bool(value, &b) == 0)
			return 0;
		buf_printf(err, "bad boolean value \"%s\" for parameter \"%s\"", value, name);
		return -1;
	case CFG_INT:
		if (cfg_parse_int(value, &v) == 0)
			return cfg_range_check(p, name, v, 1, err);
		buf_printf(err, "bad numerical value \"%s\" for parameter \"%s\"", value, name);
		return -1;
	case CFG_TIME:
		if (cfg_parse_time_ms(value, p->unit ? p->unit : "s", &v) == 0)
			return cfg_range_check(p, name, v, 1000, err);
		buf_printf(err,
			   "bad time value \"%s\" for parameter \"%s\" (use a number and "
			   "a unit: ms, s, m, h, d or w)",
			   value, name);
		return -1;
	case CFG_SIZE:
		if (cfg_parse_size(value, &v) == 0)
			return cfg_range_check(p, name, v, 1, err);
		buf_printf(err, "bad size value \"%s\" for parameter \"%s\"", value, name);
		return -1;
	case CFG_LIST:
	case CFG_TABLES:
	case CFG_LISTEN:
		return cfg_items_check(p, name, value, err);
	case CFG_STR:
		return 0;
	}
	return 0;
}
