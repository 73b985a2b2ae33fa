/* What the workbench remembers between runs: window size, the last model, the
 * colour scheme override. A small keyfile, g_get_user_config_dir()/stem-workbench/
 * state.ini, rather than GSettings: GSettings needs its schema compiled and
 * installed before the first start, and the workbench must run from a build
 * directory (and in tests, with XDG_CONFIG_HOME pointing at a scratch folder).
 * Recent model files go through GtkRecentManager like every GTK application's. */
#ifndef STEM_UI_STATE_H
#define STEM_UI_STATE_H

#include <glib.h>

G_BEGIN_DECLS

int stem_state_get_int(const char *group, const char *key, int fallback);
void stem_state_set_int(const char *group, const char *key, int value);
gboolean stem_state_get_bool(const char *group, const char *key, gboolean fallback);
void stem_state_set_bool(const char *group, const char *key, gboolean value);
/* g_free; NULL when unset */
char *stem_state_get_string(const char *group, const char *key);
void stem_state_set_string(const char *group, const char *key, const char *value);
/* Writes the file now (the setters write it too: the file is tiny). */
gboolean stem_state_save(GError **error);
const char *stem_state_path(void);

/* The default model: $XDG_DATA_HOME/stem-workbench/default.safetensors (what
 * scripts/workbench.sh trains). Static string. */
const char *stem_default_model_path(void);
/* Folder for models trained from the workbench. Static string. */
const char *stem_models_dir(void);

G_END_DECLS

#endif
