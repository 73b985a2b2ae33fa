/* Setting one member of a JSON object under construction, with non-finite
 * numbers and missing strings written as null (JSON has no NaN). Shared by the
 * report writer and the analysis commands' --json output. */
#ifndef STEM_VIZ_JSON_MEMBERS_H
#define STEM_VIZ_JSON_MEMBERS_H

#include <json-glib/json-glib.h>
#include <math.h>

static inline void viz_json_string(JsonBuilder *b, const char *k, const char *v)
{
    json_builder_set_member_name(b, k);
    if (v) json_builder_add_string_value(b, v);
    else json_builder_add_null_value(b);
}

static inline void viz_json_int(JsonBuilder *b, const char *k, gint64 v)
{
    json_builder_set_member_name(b, k);
    json_builder_add_int_value(b, v);
}

static inline void viz_json_double(JsonBuilder *b, const char *k, double v)
{
    json_builder_set_member_name(b, k);
    if (isfinite(v)) json_builder_add_double_value(b, v);
    else json_builder_add_null_value(b);
}

#endif
