/* The state keyfile (see stem-state.h). Main thread only. */
#include "stem-state.h"

#include <glib/gstdio.h>

static GKeyFile *state;
static char *state_file;

const char *stem_state_path(void)
{
    if (!state_file) state_file = g_build_filename(g_get_user_config_dir(), "stem-workbench", "state.ini", NULL);
    return state_file;
}

static GKeyFile *kf(void)
{
    if (!state) {
        state = g_key_file_new();
        /* a missing or unreadable file is a first start, not an error */
        g_key_file_load_from_file(state, stem_state_path(), G_KEY_FILE_KEEP_COMMENTS, NULL);
    }
    return state;
}

gboolean stem_state_save(GError **error)
{
    char *dir = g_path_get_dirname(stem_state_path());
    g_mkdir_with_parents(dir, 0700);
    g_free(dir);
    return g_key_file_save_to_file(kf(), stem_state_path(), error);
}

static void save_quietly(void)
{
    GError *e = NULL;
    if (!stem_state_save(&e)) {
        g_message("cannot save %s: %s", stem_state_path(), e->message);
        g_clear_error(&e);
    }
}

int stem_state_get_int(const char *group, const char *key, int fallback)
{
    GError *e = NULL;
    int v = g_key_file_get_integer(kf(), group, key, &e);
    if (e) {
        g_clear_error(&e);
        return fallback;
    }
    return v;
}

void stem_state_set_int(const char *group, const char *key, int value)
{
    g_key_file_set_integer(kf(), group, key, value);
    save_quietly();
}

gboolean stem_state_get_bool(const char *group, const char *key, gboolean fallback)
{
    GError *e = NULL;
    gboolean v = g_key_file_get_boolean(kf(), group, key, &e);
    if (e) {
        g_clear_error(&e);
        return fallback;
    }
    return v;
}

void stem_state_set_bool(const char *group, const char *key, gboolean value)
{
    g_key_file_set_boolean(kf(), group, key, value);
    save_quietly();
}

char *stem_state_get_string(const char *group, const char *key)
{
    return g_key_file_get_string(kf(), group, key, NULL);
}

void stem_state_set_string(const char *group, const char *key, const char *value)
{
    if (value) g_key_file_set_string(kf(), group, key, value);
    else g_key_file_remove_key(kf(), group, key, NULL);
    save_quietly();
}

const char *stem_default_model_path(void)
{
    static char *p;
    if (!p) p = g_build_filename(g_get_user_data_dir(), "stem-workbench", "default.safetensors", NULL);
    return p;
}

const char *stem_models_dir(void)
{
    static char *p;
    if (!p) p = g_build_filename(g_get_user_data_dir(), "stem-workbench", "models", NULL);
    return p;
}
