/* rules_action.c - one header_checks(5)/body_checks(5) result, parsed.
 *
 * "ACTION optional text", ACTION case-insensitive, with exactly the
 * actions of Postfix 3.7's header_checks(5) (no access(5)-style "5NN
 * text" or DEFER: Postfix ignores those here too). A REJECT text may begin
 * with its own enhanced status code ("REJECT 5.7.2 no thanks"), as
 * Postfix's dsn_prepend() allows; otherwise 5.7.1.
 */
#include "rules_milter.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum rules_kind kind;
	int need_text;
} rules_actions[] = {
    {"DUNNO", RULES_ACT_NONE, 0},	 {"OK", RULES_ACT_NONE, 0},
    {"REJECT", RULES_ACT_REJECT, 0},	 {"PASS", RULES_ACT_PASS, 0},
    {"STRIP", RULES_ACT_STRIP, 0},	 {"DISCARD", RULES_ACT_DISCARD, 0},
    {"HOLD", RULES_ACT_HOLD, 0},	 {"WARN", RULES_ACT_WARN, 0},
    {"INFO", RULES_ACT_INFO, 0},	 {"IGNORE", RULES_ACT_IGNORE, 0},
    {"REPLACE", RULES_ACT_REPLACE, 1},	 {"PREPEND", RULES_ACT_PREPEND, 1},
    {"REDIRECT", RULES_ACT_REDIRECT, 1}, {"BCC", RULES_ACT_BCC, 1},
    {"FILTER", RULES_ACT_FILTER, 1},
};

const char *rules_kind_name(enum rules_kind k)
{
	for (size_t i = 0; i < sizeof(rules_actions) / sizeof(rules_actions[0]); i++)
		if (rules_actions[i].kind == k)
			return rules_actions[i].name;
	return "?";
}

/* "5.7.2 text" -> dsn "5.7.2", text "text" (class must match code). */
static const char *rules_dsn_split(const char *text, char cls, char *dsn, size_t dsnlen)
{
	const char *p = text;
	size_t n;

	if (*p == cls && p[1] == '.') {
		p += 2;
		for (n = 0; isdigit((unsigned char)*p) && n < 3; n++)
			p++;
		if (n > 0 && *p == '.') {
			p++;
			for (n = 0; isdigit((unsigned char)*p) && n < 3; n++)
				p++;
			if (n > 0 && (*p == ' ' || *p == 0) && (size_t)(p - text) < dsnlen) {
				memcpy(dsn, text, (size_t)(p - text));
				dsn[p - text] = 0;
				while (*p == ' ')
					p++;
				return p;
			}
		}
	}
	dsn[0] = cls, dsn[1] = 0;
	strcat(dsn, ".7.1");
	return text;
}

static void rules_reply(struct rules_action *a, const char *code, const char *text)
{
	const char *t;

	memcpy(a->code, code, 3);
	a->code[3] = 0;
	t = rules_dsn_split(text, code[0], a->dsn, sizeof(a->dsn));
	free(a->text);
	a->text = xstrdup(*t ? t : "Message content rejected");
}

int rules_action_parse(const char *value, struct rules_action *a, struct buf *err)
{
	const char *p = value, *w, *text;
	size_t wl;

	memset(a, 0, sizeof(*a));
	while (isspace((unsigned char)*p))
		p++;
	for (w = p; *p && !isspace((unsigned char)*p); p++)
		;
	wl = (size_t)(p - w);
	while (isspace((unsigned char)*p))
		p++;
	text = p;
	for (size_t i = 0; i < sizeof(rules_actions) / sizeof(rules_actions[0]); i++) {
		if (strlen(rules_actions[i].name) != wl ||
		    strncasecmp(w, rules_actions[i].name, wl))
			continue;
		if (rules_actions[i].need_text && *text == 0) {
			buf_printf(err, "%s needs text", rules_actions[i].name);
			return -1;
		}
		a->kind = rules_actions[i].kind;
		if (a->kind == RULES_ACT_REJECT)
			rules_reply(a, "550", text);
		else
			a->text = xstrdup(text);
		return 0;
	}
	buf_printf(err, "unknown command");
	return -1;
}

void rules_action_free(struct rules_action *a)
{
	free(a->text);
	a->text = NULL;
}
