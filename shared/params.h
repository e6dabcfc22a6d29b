/* params.h - the registry of every tern.conf parameter ternd knows.
 *
 * One table, tern_params[], gives each parameter its type, its default
 * (Postfix's default where the name is Postfix's, "postconf -d" of
 * Postfix 3.7 at compatibility level 3.6) and one line of help; it is
 * what "tern conf -d" prints and what cfg_new() validates against. Tern's
 * own parameters carry CFG_P_TERN. Add a parameter here, never elsewhere.
 */
#ifndef TERN_PARAMS_H
#define TERN_PARAMS_H

#include "cfg.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.1"
#endif

/* The main config file's name inside the config directory. */
#define TERN_CONF_FILE "tern.conf"

extern const struct cfg_param tern_params[]; /* terminated by name NULL */

#endif
