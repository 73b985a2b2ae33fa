/* Edit reports and the shift / localization chart data (report.h). */
#include "report.h"
#include "json-members.h"
#include "geometry.h"
#include "output.h"
#include "textstats.h"

#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/sampler.h"

#include <cairo-pdf.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ shift chart */

/* a probability as percent with the precision small values need; static buffers, 4 in rotation */
static const char *pfmt(double p)
{
    static _Thread_local char buf[4][32];
    static _Thread_local int k = 0;
    char *b = buf[k++ & 3];
    if (!isfinite(p)) g_strlcpy(b, "–", 32);
    else if (p == 0 || p >= 0.001) g_snprintf(b, 32, "%.1f%%", 100 * p);
    else g_snprintf(b, 32, "%.2g%%", 100 * p);
    return b;
}

static char *keep_str(GPtrArray *keep, char *s)
{
    g_ptr_array_add(keep, s);
    return s;
}

void viz_shift_labels(const VizShift *s, const StemTokenizer *tok, char **labels[VIZ_SHIFT_N])
{
    for (int p = 0; p < VIZ_SHIFT_N; p++) {
        labels[p] = g_new0(char *, s->k + 1);
        for (int i = 0; s->probs[p] && i < s->k; i++) labels[p][i] = viz_token_label(tok, s->top[p][i].id);
    }
}

void viz_shift_chart_init(VizShiftChart *c, const VizShift *s, char **const labels[VIZ_SHIFT_N], const char *tgt_label,
                          const char *src_label, const char *title, const char *prompt, const char *written_prompt)
{
    memset(c, 0, sizeof *c);
    c->keep = g_ptr_array_new_with_free_func(g_free);
    int k = s->k;
    c->bars = g_new0(VizBar, (size_t)VIZ_SHIFT_N * (k + 2));
    static const char *titles[VIZ_SHIFT_N] = { "Original prompt", "Target written in", "Edited model, original prompt" };
    const char *subs[VIZ_SHIFT_N] = { prompt, written_prompt, prompt };
    const char *ans_label[2] = { tgt_label ? tgt_label : "target's answer", src_label ? src_label : "source's answer" };
    int np = 0;
    for (int p = 0; p < VIZ_SHIFT_N; p++) {
        VizBar *b = c->bars + (size_t)p * (k + 2);
        int n = 0;
        gboolean seen_t = FALSE, seen_s = FALSE;
        if (s->probs[p]) {
            for (int i = 0; i < k; i++) {
                int id = s->top[p][i].id;
                int e = id == s->tgt_answer ? 1 : id == s->src_answer ? 2 : 0;
                seen_t |= e == 1;
                seen_s |= e == 2;
                b[n++] = (VizBar){ labels[p][i] ? labels[p][i] : "?", s->top[p][i].prob, e, NULL };
            }
            /* the answers below the top-k: one more bar each, so their probability is always visible */
            const int extra[2] = { s->tgt_answer, s->src_answer };
            const gboolean seen[2] = { seen_t, seen_s };
            for (int q = 0; q < 2; q++) {
                if (extra[q] < 0 || seen[q] || (q == 1 && extra[1] == extra[0])) continue;
                float pv = s->probs[p][extra[q]];
                int rank = 1;
                for (int i = 0; i < s->vocab; i++) rank += s->probs[p][i] > pv || (s->probs[p][i] == pv && i < extra[q]);
                b[n++] = (VizBar){ ans_label[q], pv, q + 1, keep_str(c->keep, g_strdup_printf("rank %d", rank)) };
            }
        }
        c->panels[np++] = (VizBarPanel){ titles[p], s->probs[p] ? subs[p] : "(no target to write in)", n, b };
    }
    GString *sub = g_string_new(NULL);
    g_string_append_printf(sub, "probability moved %.3f (total variation, original vs edited) · KL(original ‖ edited) %.3f nats",
                           s->prob_moved, s->kl_orig_edited);
    if (isfinite(s->kl_written_edited))
        g_string_append_printf(sub, " · KL(written ‖ edited) %.3f nats", s->kl_written_edited);
    if (s->tgt_answer >= 0) {
        g_string_append_printf(sub, "\nP(%s): %s → %s edited", ans_label[0], pfmt(s->p_tgt[0]), pfmt(s->p_tgt[2]));
        if (isfinite(s->p_tgt[1])) g_string_append_printf(sub, " (%s written in)", pfmt(s->p_tgt[1]));
    }
    if (s->src_answer >= 0)
        g_string_append_printf(sub, "%sP(%s): %s → %s edited", s->tgt_answer >= 0 ? " · " : "\n", ans_label[1],
                               pfmt(s->p_src[0]), pfmt(s->p_src[2]));
    char *st = keep_str(c->keep, g_string_free(sub, FALSE));
    c->chart = (VizBarGroups){ title, st, "next-token probability (%)", np, c->panels, 0, TRUE,
                               { NULL, s->tgt_answer >= 0 ? "target's answer" : NULL,
                                 s->src_answer >= 0 ? "source's answer" : NULL } };
}

void viz_shift_chart_clear(VizShiftChart *c)
{
    g_free(c->bars);
    if (c->keep) g_ptr_array_unref(c->keep);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ localization chart */

void viz_localize_chart_init(VizLocalizeChart *c, const VizLocalize *l, const char *title, const char *subtitle,
                             const char *tgt_label, const char *src_label)
{
    memset(c, 0, sizeof *c);
    c->keep = g_ptr_array_new_with_free_func(g_free);
    /* x: "unedited" then each edited layer; both curves start from the unedited value */
    int n = l->n + 1;
    c->x = g_new(double, n);
    for (int i = 0; i < 6; i++) c->y[i] = g_new(double, n);
    c->x_ticks = g_new0(const char *, n);
    c->x[0] = 0;
    c->x_ticks[0] = "unedited";
    c->y[0][0] = c->y[1][0] = l->p_tgt_base;
    c->y[2][0] = c->y[3][0] = l->p_src_base;
    for (int i = 0; i < l->n; i++) {
        c->x[i + 1] = i + 1;
        c->x_ticks[i + 1] = keep_str(c->keep, g_strdup_printf("layer %d", l->layers[i]));
        c->y[0][i + 1] = l->p_tgt_single[i];
        c->y[1][i + 1] = l->p_tgt_cumul[i];
        c->y[2][i + 1] = l->p_src_single[i];
        c->y[3][i + 1] = l->p_src_cumul[i];
    }
    const char *tl = tgt_label ? tgt_label : "target's answer", *sl = src_label ? src_label : "source's answer";
    int ns = 0;
    gboolean has_t = isfinite(l->p_tgt_base), has_s = isfinite(l->p_src_base);
    if (has_t) {
        c->series[ns++] = (VizLineSeries){ keep_str(c->keep, g_strdup_printf("P(%s), edit in this layer only", tl)), n,
                                           c->x, c->y[0], FALSE, TRUE, 1 };
        c->series[ns++] = (VizLineSeries){ keep_str(c->keep, g_strdup_printf("P(%s), edit in layers up to this one", tl)),
                                           n, c->x, c->y[1], TRUE, TRUE, 1 };
    }
    if (has_s) {
        c->series[ns++] = (VizLineSeries){ keep_str(c->keep, g_strdup_printf("P(%s), edit in this layer only", sl)), n,
                                           c->x, c->y[2], FALSE, TRUE, 2 };
        c->series[ns++] = (VizLineSeries){ keep_str(c->keep, g_strdup_printf("P(%s), edit in layers up to this one", sl)),
                                           n, c->x, c->y[3], TRUE, TRUE, 2 };
    }
    c->lines = (VizLines){ "P(answer) with the edit in one layer, and in every layer up to it", NULL, "edited layers",
                           "next-token probability (%)", ns, c->series, FALSE, FALSE, 0, 0, TRUE, n, c->x_ticks };
    /* heatmap: modes x layers (without the unedited column: it is the same in every row) */
    int rows = (has_t ? 2 : 0) + (has_s ? 2 : 0), cols = MAX(l->n, 1);
    c->hv = g_new(double, (size_t)MAX(rows, 1) * cols);
    c->row_labels = g_new0(const char *, MAX(rows, 1));
    int r = 0;
    const char *names[4] = { "P(%s), this layer only", "P(%s), layers up to here", "P(%s), this layer only",
                             "P(%s), layers up to here" };
    for (int q = 0; q < 4; q++) {
        if ((q < 2 && !has_t) || (q >= 2 && !has_s)) continue;
        c->row_labels[r] = keep_str(c->keep, g_strdup_printf(names[q], q < 2 ? tl : sl));
        for (int i = 0; i < l->n; i++) c->hv[(size_t)r * cols + i] = c->y[q][i + 1];
        r++;
    }
    char *hsub = has_s ? keep_str(c->keep, g_strdup_printf("unedited: P(%s) %s, P(%s) %s", tl, pfmt(l->p_tgt_base), sl,
                                                           pfmt(l->p_src_base)))
                       : keep_str(c->keep, g_strdup_printf("unedited: P(%s) %s", tl, pfmt(l->p_tgt_base)));
    c->heat = (VizHeatmap){ "The same as a heatmap", hsub, "edited layers", NULL, "probability", rows, l->n, c->hv, NULL,
                            c->row_labels, c->x_ticks + 1, 0, 0, TRUE, FALSE };
    c->panels[0] = (VizPanel){ viz_draw_lines, &c->lines };
    c->panels[1] = (VizPanel){ viz_draw_heatmap, &c->heat };
    c->chart = (VizGrid){ title, subtitle, rows && l->n ? 2 : 1, c->panels, 1 };
}

void viz_localize_chart_clear(VizLocalizeChart *c)
{
    g_free(c->x);
    for (int i = 0; i < 6; i++) g_free(c->y[i]);
    g_free(c->hv);
    g_free(c->x_ticks);
    g_free(c->row_labels);
    g_free(c->col_labels);
    if (c->keep) g_ptr_array_unref(c->keep);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ build */

void viz_report_options_init(VizReportOptions *o)
{
    memset(o, 0, sizeof *o);
    o->k = 5;
    o->gen_tokens = 16;
    o->metrics = TRUE;
}

static char *generate_text(StemModel *m, const char *prompt, int n_new)
{
    size_t n = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n);
    if (n == 0) {
        g_free(ids);
        return g_strdup("");
    }
    int n_out = 0;
    int32_t *gen = stem_generate(m, ids, (int)n, n_new, 0.0f, 1, &n_out);
    size_t len = 0;
    char *text = stem_tokenizer_decode(m->tok, gen, (size_t)n_out, &len);
    char *valid = g_utf8_make_valid(text, (gssize)len);
    g_free(text);
    g_free(gen);
    g_free(ids);
    return valid;
}

static char *shell_quote_opt(const char *flag, const char *v)
{
    if (!v) return g_strdup("");
    char *q = g_shell_quote(v);
    char *s = g_strdup_printf(" %s %s", flag, q);
    g_free(q);
    return s;
}

static void add_command(GPtrArray *a, const char *what, const char *cmd)
{
    g_ptr_array_add(a, g_strdup_printf("%s\t%s", what, cmd));
}

static void build_commands(VizReport *r)
{
    r->commands = g_ptr_array_new_with_free_func(g_free);
    char *db = g_shell_quote(r->db_path ? r->db_path : "EDITS.db");
    char *model = g_shell_quote(r->model_path ? r->model_path : "MODEL.safetensors");
    char *c;
    if (r->applied) {
        c = g_strdup_printf("stem edit revert --db %s %" G_GINT64_FORMAT, db, r->id);
        add_command(r->commands, "revert this patch set (it is applied now)", c);
        g_free(c);
        c = g_strdup_printf("stem edit reapply --db %s %" G_GINT64_FORMAT, db, r->id);
        add_command(r->commands, "re-apply it after a revert", c);
        g_free(c);
    } else {
        c = g_strdup_printf("stem edit reapply --db %s %" G_GINT64_FORMAT, db, r->id);
        add_command(r->commands, "re-apply this patch set (it is reverted now)", c);
        g_free(c);
        c = g_strdup_printf("stem edit revert --db %s %" G_GINT64_FORMAT, db, r->id);
        add_command(r->commands, "revert it again", c);
        g_free(c);
    }
    c = g_strdup_printf("stem edit show --db %s --model %s %" G_GINT64_FORMAT, db, model, r->id);
    add_command(r->commands, "show its rows and plan", c);
    g_free(c);
    c = g_strdup_printf("stem edit export --db %s %" G_GINT64_FORMAT " --out patch-%" G_GINT64_FORMAT ".safetensors", db,
                        r->id, r->id);
    add_command(r->commands, "export it as a patch file", c);
    g_free(c);
    /* the same recipe, planned afresh (on another database or model copy) */
    const StemRecipe *rc = &r->recipe;
    char *src = shell_quote_opt("--source", rc->source), *tgt = shell_quote_opt("--target", rc->target);
    char *lay = shell_quote_opt("--layers", rc->layers ? rc->layers : "all");
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "stem edit apply --db %s --model %s%s%s --kind %s", db, model, src, tgt,
                           stem_edit_kind_name(rc->kind));
    if (rc->kind != STEM_EDIT_ABLATE) g_string_append_printf(s, " --strategy %s", stem_strategy_name(rc->strategy));
    g_string_append(s, lay);
    if (rc->kind == STEM_EDIT_BLEND) g_string_append_printf(s, " --alpha %g", rc->alpha);
    if (rc->kind == STEM_EDIT_ABLATE) g_string_append_printf(s, " --ablate %s", rc->ablate == STEM_ABLATE_MEAN ? "mean" : "zero");
    if (rc->allow_subword) g_string_append(s, " --allow-subword");
    add_command(r->commands, "apply the same recipe again (planned afresh)", s->str);
    g_string_free(s, TRUE);
    c = g_strdup_printf("stem report --db %s --model %s %" G_GINT64_FORMAT " --out report-%" G_GINT64_FORMAT ".pdf", db,
                        model, r->id, r->id);
    add_command(r->commands, "this report", c);
    g_free(c);
    g_free(src);
    g_free(tgt);
    g_free(lay);
    g_free(db);
    g_free(model);
}

VizReport *viz_report_build(StemEditDb *db, StemModel *m, gint64 id, const VizReportOptions *o, GError **error)
{
    if (!m->tok) {
        g_set_error(error, VIZ_ERROR, 40, "the model has no tokenizer");
        return NULL;
    }
    StemPatchSet *ps = stem_editdb_get(db, id, TRUE, error);
    if (!ps) return NULL;
    const int F = m->cfg.ffn_dim;
    if (ps->ffn != F) {
        g_set_error(error, VIZ_ERROR, 41, "patch set %" G_GINT64_FORMAT " has rows of width %d, the model %d", id, ps->ffn, F);
        stem_patch_set_free(ps);
        return NULL;
    }
    VizReport *r = g_new0(VizReport, 1);
    r->id = ps->id;
    r->applied = ps->applied;
    r->apply_seq = ps->apply_seq;
    r->created_at = g_strdup(ps->created_at);
    r->applied_at = g_strdup(ps->applied_at);
    r->reverted_at = g_strdup(ps->reverted_at);
    r->origin = g_strdup(ps->origin);
    r->checksum = g_strdup(ps->checksum);
    stem_recipe_copy(&r->recipe, &ps->recipe);
    r->recipe_desc = stem_recipe_describe(&r->recipe);
    r->recipe_json = g_strdup(ps->recipe_json);
    r->summary = ps->summary_json ? json_from_string(ps->summary_json, NULL) : NULL;
    r->relation = -1;
    r->warnings = g_ptr_array_new_with_free_func(g_free);

    /* provenance */
    r->model_path = g_strdup(o->model_path ? o->model_path : m->path);
    GError *e = NULL;
    const char *sha = stem_model_sha256(m, &e);
    r->model_sha256 = g_strdup(sha ? sha : "");
    g_clear_error(&e);
    r->tokenizer_sha256 = stem_tokenizer_sha256(m->tok);
    r->db_path = g_strdup(o->db_path ? o->db_path : stem_editdb_path(db));
    r->db_model_sha256 = g_strdup(stem_editdb_model_sha256(db));
    r->program = g_strdup("stem-workbench " STEM_VERSION);
    GDateTime *now = g_date_time_new_now_utc();
    r->date = g_date_time_format_iso8601(now);
    g_date_time_unref(now);
    if (ps->model_sha256 && *r->model_sha256 && strcmp(ps->model_sha256, r->model_sha256))
        g_ptr_array_add(r->warnings, g_strdup_printf("the patch set was made for model %.16s…, this is %.16s…",
                                                     ps->model_sha256, r->model_sha256));

    /* rows per layer */
    r->n_rows = ps->n_rows;
    r->ffn = F;
    r->layers = g_new(int, MAX(m->cfg.n_layers, 1));
    r->rows_per_layer = g_new0(int, MAX(m->cfg.n_layers, 1));
    r->mean_delta = g_new0(double, MAX(m->cfg.n_layers, 1));
    r->layer_tokens = g_ptr_array_new_with_free_func(g_free);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        GString *toks = NULL;
        int cnt = 0;
        double dsum = 0;
        for (int i = 0; i < ps->n_rows; i++) {
            if (ps->layers[i] != l) continue;
            cnt++;
            double d2 = 0;
            for (int k = 0; k < F; k++) {
                double d = (double)ps->after[(size_t)i * F + k] - ps->before[(size_t)i * F + k];
                d2 += d * d;
            }
            dsum += sqrt(d2);
            char *t = viz_token_label(m->tok, ps->tokens[i]);
            if (!toks) toks = g_string_new(t);
            else g_string_append_printf(toks, " %s", t);
            g_free(t);
        }
        if (!cnt) continue;
        r->layers[r->n_layers] = l;
        r->rows_per_layer[r->n_layers] = cnt;
        r->mean_delta[r->n_layers] = dsum / cnt;
        g_ptr_array_add(r->layer_tokens, g_string_free(toks, FALSE));
        r->n_layers++;
    }
    if (r->summary && JSON_NODE_HOLDS_OBJECT(r->summary)) {
        JsonObject *so = json_node_get_object(r->summary);
        if (json_object_has_member(so, "warnings")) {
            JsonArray *w = json_object_get_array_member(so, "warnings");
            for (guint i = 0; w && i < json_array_get_length(w); i++)
                g_ptr_array_add(r->warnings, g_strdup(json_array_get_string_element(w, i)));
        }
    }

    /* the model WITHOUT the patch set */
    float *without = g_new(float, (size_t)MAX(ps->n_rows, 1) * F);
    if (!stem_editdb_rows_without(db, id, ps->n_rows, ps->layers, ps->tokens, without, error)) {
        g_free(without);
        stem_patch_set_free(ps);
        viz_report_free(r);
        return NULL;
    }
    VizEditRows wo = { ps->n_rows, ps->layers, ps->tokens, without };
    VizEditRows edit = { ps->n_rows, ps->layers, ps->tokens, ps->after };
    StemOverlaySnapshot *base = viz_edit_push(m, &wo, ~0ull);

    StemFacts *f = stem_facts_load_default(&e);
    g_clear_error(&e);
    int cs = f && r->recipe.source ? stem_facts_find(f, r->recipe.source) : -1;
    int ct = f && r->recipe.target ? stem_facts_find(f, r->recipe.target) : -1;

    /* prompt, written-in prompt, answers */
    if (o->prompt) r->prompt = g_strdup(o->prompt);
    else if (cs >= 0) r->prompt = stem_facts_canonical_prompt(f, cs, REL_CAPITAL);
    else r->prompt = g_strdup(r->recipe.source ? r->recipe.source : "The");
    r->written_prompt = r->recipe.target ? viz_written_prompt(r->prompt, r->recipe.source, r->recipe.target) : NULL;
    viz_fact_answers(f, r->prompt, r->recipe.source, r->recipe.target, &r->src_answer, &r->tgt_answer, &r->relation);
    int src_id = viz_answer_first_token(m->tok, r->prompt, r->src_answer);
    int tgt_id = r->written_prompt ? viz_answer_first_token(m->tok, r->written_prompt, r->tgt_answer) : -1;
    if (src_id >= 0) r->src_answer_label = viz_token_label(m->tok, src_id);
    if (tgt_id >= 0) r->tgt_answer_label = viz_token_label(m->tok, tgt_id);
    size_t n_p = 0, n_w = 0;
    int32_t *pid = stem_tokenizer_encode(m->tok, r->prompt, strlen(r->prompt), &n_p);
    int32_t *wid = r->written_prompt ? stem_tokenizer_encode(m->tok, r->written_prompt, strlen(r->written_prompt), &n_w)
                                     : NULL;
    if (n_p > 0) {
        r->has_shift = viz_topk_shift(m, &edit, pid, (int)n_p, wid, (int)n_w, o->k > 0 ? o->k : 5, src_id, tgt_id,
                                      &r->shift, &e);
        if (!r->has_shift) {
            g_ptr_array_add(r->warnings, g_strdup_printf("top-k shift: %s", e->message));
            g_clear_error(&e);
        } else {
            viz_shift_labels(&r->shift, m->tok, r->shift_labels);
        }
        r->has_localize = viz_localize(m, &edit, pid, (int)n_p, src_id, tgt_id, &r->loc, &e);
        if (!r->has_localize) {
            g_ptr_array_add(r->warnings, g_strdup_printf("localization: %s", e->message));
            g_clear_error(&e);
        }
    }
    if (!r->src_answer && !o->prompt && cs < 0)
        g_ptr_array_add(r->warnings, g_strdup("the source is not a country: no fact answers to track"));

    /* metrics: the model without the set is the "before" state */
    if (!o->metrics) r->metrics_note = g_strdup("not requested");
    else if (!f) r->metrics_note = g_strdup("the facts table was not found");
    else if (cs < 0 || ct < 0) r->metrics_note = g_strdup("source and target must both be countries");
    else if (r->recipe.kind == STEM_EDIT_ABLATE) r->metrics_note = g_strdup("not defined for an ablation");
    else {
        StemEditEval *ev = stem_edit_eval_new(m, f);
        stem_edit_eval_before(ev, cs, ct);
        StemOverlaySnapshot *s = viz_edit_push(m, &edit, ~0ull);
        int32_t *uniq = g_new(int32_t, MAX(ps->n_rows, 1));
        int nu = 0;
        for (int i = 0; i < ps->n_rows; i++) {
            gboolean dup = FALSE;
            for (int k = 0; k < nu && !dup; k++) dup = uniq[k] == ps->tokens[i];
            if (!dup) uniq[nu++] = ps->tokens[i];
        }
        stem_edit_eval_after(ev, cs, ct, uniq, nu, &r->score);
        r->score.rows = ps->n_rows;
        stem_edit_plan_pop(m, s);
        stem_edit_eval_free(ev);
        g_free(uniq);
        r->has_metrics = TRUE;
    }

    /* sample generations: prompts about the source, before and after */
    GPtrArray *gp = g_ptr_array_new_with_free_func(g_free);
    if (cs >= 0) {
        const StemRelation rels[3] = { REL_CAPITAL, REL_CONTINENT, REL_CURRENCY };
        for (int i = 0; i < 3; i++)
            if (stem_facts_value(f, cs, rels[i])) g_ptr_array_add(gp, stem_facts_canonical_prompt(f, cs, rels[i]));
    }
    if (gp->len == 0) g_ptr_array_add(gp, g_strdup(r->prompt));
    r->n_gen = (int)gp->len;
    r->gen_prompt = g_new0(char *, r->n_gen + 1);
    r->gen_before = g_new0(char *, r->n_gen + 1);
    r->gen_after = g_new0(char *, r->n_gen + 1);
    int nt = o->gen_tokens > 0 ? o->gen_tokens : 16;
    for (int i = 0; i < r->n_gen; i++) {
        r->gen_prompt[i] = g_strdup(g_ptr_array_index(gp, i));
        r->gen_before[i] = generate_text(m, r->gen_prompt[i], nt);
    }
    StemOverlaySnapshot *s = viz_edit_push(m, &edit, ~0ull);
    for (int i = 0; i < r->n_gen; i++) r->gen_after[i] = generate_text(m, r->gen_prompt[i], nt);
    stem_edit_plan_pop(m, s);
    g_ptr_array_unref(gp);

    stem_edit_plan_pop(m, base);
    build_commands(r);
    g_free(pid);
    g_free(wid);
    g_free(without);
    if (f) stem_facts_free(f);
    stem_patch_set_free(ps);
    return r;
}

void viz_report_free(VizReport *r)
{
    if (!r) return;
    g_free(r->created_at);
    g_free(r->applied_at);
    g_free(r->reverted_at);
    g_free(r->origin);
    g_free(r->checksum);
    g_free(r->recipe_desc);
    g_free(r->recipe_json);
    stem_recipe_clear(&r->recipe);
    if (r->summary) json_node_unref(r->summary);
    g_free(r->model_path);
    g_free(r->model_sha256);
    g_free(r->tokenizer_sha256);
    g_free(r->db_path);
    g_free(r->db_model_sha256);
    g_free(r->program);
    g_free(r->date);
    g_free(r->layers);
    g_free(r->rows_per_layer);
    g_free(r->mean_delta);
    if (r->layer_tokens) g_ptr_array_unref(r->layer_tokens);
    if (r->warnings) g_ptr_array_unref(r->warnings);
    g_free(r->prompt);
    g_free(r->written_prompt);
    g_free(r->src_answer);
    g_free(r->tgt_answer);
    g_free(r->src_answer_label);
    g_free(r->tgt_answer_label);
    for (int p = 0; p < VIZ_SHIFT_N; p++) g_strfreev(r->shift_labels[p]);
    if (r->has_shift) viz_shift_clear(&r->shift);
    if (r->has_localize) viz_localize_clear(&r->loc);
    g_free(r->metrics_note);
    g_strfreev(r->gen_prompt);
    g_strfreev(r->gen_before);
    g_strfreev(r->gen_after);
    if (r->commands) g_ptr_array_unref(r->commands);
    g_free(r);
}

/* ------------------------------------------------------------------ JSON */

static void jfrac(JsonBuilder *b, const char *k, int num, int den)
{
    viz_json_double(b, k, den > 0 ? (double)num / den : NAN);
}

static void json_doubles(JsonBuilder *b, const char *k, const double *v, int n)
{
    json_builder_set_member_name(b, k);
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        if (isfinite(v[i])) json_builder_add_double_value(b, v[i]);
        else json_builder_add_null_value(b);
    }
    json_builder_end_array(b);
}

void viz_report_to_json(const VizReport *r, JsonBuilder *b)
{
    json_builder_begin_object(b);
    viz_json_int(b, "id", r->id);
    viz_json_string(b, "state", r->applied ? "applied" : "reverted");
    viz_json_int(b, "apply_seq", r->apply_seq);
    viz_json_string(b, "created_at", r->created_at);
    viz_json_string(b, "applied_at", r->applied_at);
    viz_json_string(b, "reverted_at", r->reverted_at);
    viz_json_string(b, "origin", r->origin);
    viz_json_string(b, "checksum", r->checksum);
    json_builder_set_member_name(b, "provenance");
    json_builder_begin_object(b);
    viz_json_string(b, "model", r->model_path);
    viz_json_string(b, "model_sha256", r->model_sha256);
    viz_json_string(b, "tokenizer_sha256", r->tokenizer_sha256);
    viz_json_string(b, "database", r->db_path);
    viz_json_string(b, "database_model_sha256", r->db_model_sha256);
    viz_json_string(b, "program", r->program);
    viz_json_string(b, "date", r->date);
    json_builder_end_object(b);
    viz_json_string(b, "recipe_text", r->recipe_desc);
    json_builder_set_member_name(b, "recipe");
    JsonNode *rn = r->recipe_json ? json_from_string(r->recipe_json, NULL) : NULL;
    if (rn) json_builder_add_value(b, rn);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "plan");
    if (r->summary) json_builder_add_value(b, json_node_copy(r->summary));
    else json_builder_add_null_value(b);
    viz_json_int(b, "rows", r->n_rows);
    json_builder_set_member_name(b, "rows_per_layer");
    json_builder_begin_array(b);
    for (int i = 0; i < r->n_layers; i++) {
        json_builder_begin_object(b);
        viz_json_int(b, "layer", r->layers[i]);
        viz_json_int(b, "rows", r->rows_per_layer[i]);
        viz_json_double(b, "mean_row_change_l2", r->mean_delta[i]);
        viz_json_string(b, "tokens", g_ptr_array_index(r->layer_tokens, i));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "warnings");
    json_builder_begin_array(b);
    for (guint i = 0; i < r->warnings->len; i++) json_builder_add_string_value(b, g_ptr_array_index(r->warnings, i));
    json_builder_end_array(b);
    viz_json_string(b, "prompt", r->prompt);
    viz_json_string(b, "written_prompt", r->written_prompt);
    viz_json_string(b, "source_answer", r->src_answer);
    viz_json_string(b, "target_answer", r->tgt_answer);
    viz_json_string(b, "relation", r->relation >= 0 ? stem_relation_name((StemRelation)r->relation) : NULL);
    json_builder_set_member_name(b, "shift");
    if (r->has_shift) {
        const VizShift *s = &r->shift;
        static const char *names[VIZ_SHIFT_N] = { "original", "written_in", "edited" };
        json_builder_begin_object(b);
        viz_json_int(b, "k", s->k);
        viz_json_string(b, "source_answer_token", r->src_answer_label);
        viz_json_string(b, "target_answer_token", r->tgt_answer_label);
        viz_json_double(b, "prob_moved", s->prob_moved);
        viz_json_double(b, "kl_original_edited", s->kl_orig_edited);
        viz_json_double(b, "kl_written_edited", s->kl_written_edited);
        viz_json_double(b, "tv_written_edited", s->tv_written_edited);
        for (int p = 0; p < VIZ_SHIFT_N; p++) {
            json_builder_set_member_name(b, names[p]);
            if (!s->probs[p]) {
                json_builder_add_null_value(b);
                continue;
            }
            json_builder_begin_object(b);
            viz_json_double(b, "p_target_answer", s->p_tgt[p]);
            viz_json_double(b, "p_source_answer", s->p_src[p]);
            json_builder_set_member_name(b, "topk");
            json_builder_begin_array(b);
            for (int i = 0; i < s->k; i++) {
                json_builder_begin_object(b);
                viz_json_int(b, "id", s->top[p][i].id);
                viz_json_string(b, "token", r->shift_labels[p][i]);
                viz_json_double(b, "prob", s->top[p][i].prob);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        json_builder_end_object(b);
    } else {
        json_builder_add_null_value(b);
    }
    json_builder_set_member_name(b, "localization");
    if (r->has_localize) {
        const VizLocalize *l = &r->loc;
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "layers");
        json_builder_begin_array(b);
        for (int i = 0; i < l->n; i++) json_builder_add_int_value(b, l->layers[i]);
        json_builder_end_array(b);
        viz_json_double(b, "p_target_unedited", l->p_tgt_base);
        viz_json_double(b, "p_source_unedited", l->p_src_base);
        viz_json_double(b, "p_target_all_layers", l->p_tgt_all);
        viz_json_double(b, "p_source_all_layers", l->p_src_all);
        json_doubles(b, "p_target_single", l->p_tgt_single, l->n);
        json_doubles(b, "p_target_cumulative", l->p_tgt_cumul, l->n);
        json_doubles(b, "p_source_single", l->p_src_single, l->n);
        json_doubles(b, "p_source_cumulative", l->p_src_cumul, l->n);
        json_builder_end_object(b);
    } else {
        json_builder_add_null_value(b);
    }
    json_builder_set_member_name(b, "metrics");
    if (r->has_metrics) {
        const StemEditScore *s = &r->score;
        json_builder_begin_object(b);
        jfrac(b, "efficacy_strict", s->eff_strict, s->eff_n);
        jfrac(b, "efficacy_loose", s->eff_loose, s->eff_n);
        viz_json_int(b, "efficacy_prompts", s->eff_n);
        jfrac(b, "paraphrase_strict", s->para_strict, s->para_n);
        jfrac(b, "paraphrase_loose", s->para_loose, s->para_n);
        viz_json_int(b, "paraphrase_prompts", s->para_n);
        jfrac(b, "specificity", s->spec_kept, s->spec_n);
        viz_json_int(b, "specificity_prompts", s->spec_n);
        jfrac(b, "specificity_touched", s->touched_kept, s->touched_n);
        viz_json_int(b, "touched_prompts", s->touched_n);
        json_builder_set_member_name(b, "relation_sweep");
        json_builder_begin_object(b);
        for (int q = 0; q < REL_COUNT; q++) {
            json_builder_set_member_name(b, stem_relation_name((StemRelation)q));
            json_builder_begin_object(b);
            viz_json_int(b, "n", s->sweep_n[q]);
            viz_json_int(b, "flipped", s->sweep_flip[q]);
            json_builder_end_object(b);
        }
        json_builder_end_object(b);
        viz_json_double(b, "fluency_before", s->flu_n ? s->flu_before / s->flu_n : NAN);
        viz_json_double(b, "fluency_after", s->flu_n ? s->flu_after / s->flu_n : NAN);
        json_builder_end_object(b);
    } else {
        json_builder_begin_object(b);
        viz_json_string(b, "skipped", r->metrics_note);
        json_builder_end_object(b);
    }
    json_builder_set_member_name(b, "generations");
    json_builder_begin_array(b);
    for (int i = 0; i < r->n_gen; i++) {
        json_builder_begin_object(b);
        viz_json_string(b, "prompt", r->gen_prompt[i]);
        viz_json_string(b, "before", r->gen_before[i]);
        viz_json_string(b, "after", r->gen_after[i]);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "commands");
    json_builder_begin_array(b);
    for (guint i = 0; i < r->commands->len; i++) {
        char **kv = g_strsplit(g_ptr_array_index(r->commands, i), "\t", 2);
        json_builder_begin_object(b);
        viz_json_string(b, "purpose", kv[0]);
        viz_json_string(b, "command", kv[1]);
        json_builder_end_object(b);
        g_strfreev(kv);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
}

/* ------------------------------------------------------------------ shared text */

static char *pct(double v)
{
    return isfinite(v) ? g_strdup_printf("%.1f%%", 100 * v) : g_strdup("–");
}

static char *frac_text(int num, int den)
{
    return den > 0 ? g_strdup_printf("%.1f%% (%d/%d)", 100.0 * num / den, num, den) : g_strdup("–");
}

/* Variant rows from the stored plan: form, source tokens, target tokens, strategy, note. */
static GPtrArray *variant_rows(const VizReport *r)
{
    GPtrArray *rows = g_ptr_array_new_with_free_func(g_free);
    if (!r->summary || !JSON_NODE_HOLDS_OBJECT(r->summary)) return rows;
    JsonObject *o = json_node_get_object(r->summary);
    if (!json_object_has_member(o, "variants")) return rows;
    JsonArray *va = json_object_get_array_member(o, "variants");
    for (guint i = 0; va && i < json_array_get_length(va); i++) {
        JsonObject *v = json_array_get_object_element(va, i);
        if (!v) continue;
        const char *keys[2] = { "source_tokens", "target_tokens" };
        char *tok[2];
        for (int k = 0; k < 2; k++) {
            GString *s = g_string_new(NULL);
            JsonArray *ta = json_object_has_member(v, keys[k]) ? json_object_get_array_member(v, keys[k]) : NULL;
            for (guint q = 0; ta && q < json_array_get_length(ta); q++) {
                JsonObject *t = json_array_get_object_element(ta, q);
                const char *tx = t && json_object_has_member(t, "text") ? json_object_get_string_member(t, "text") : "?";
                char *lab = viz_text_label(tx, strlen(tx));
                g_string_append_printf(s, "%s%s", q ? " | " : "", lab);
                g_free(lab);
            }
            tok[k] = g_string_free(s, FALSE);
        }
        gboolean edited = json_object_has_member(v, "edited") && json_object_get_boolean_member(v, "edited");
        const char *note = json_object_has_member(v, "note") ? json_object_get_string_member(v, "note") : NULL;
        g_ptr_array_add(rows, g_strdup(json_object_has_member(v, "form") ? json_object_get_string_member(v, "form") : "?"));
        g_ptr_array_add(rows, tok[0]);
        g_ptr_array_add(rows, tok[1]);
        g_ptr_array_add(rows, g_strdup(json_object_has_member(v, "strategy") ? json_object_get_string_member(v, "strategy") : ""));
        g_ptr_array_add(rows, g_strdup(edited ? "edited" : note ? note : "skipped"));
    }
    return rows;
}

/* ------------------------------------------------------------------ Markdown */

static void md_escape(GString *s, const char *t)
{
    for (const char *p = t ? t : ""; *p; p++) {
        if (*p == '|') g_string_append(s, "\\|");
        else if (*p == '\n') g_string_append(s, " ");
        else g_string_append_c(s, *p);
    }
}

static void md_cell(GString *s, const char *t)
{
    g_string_append(s, " ");
    md_escape(s, t);
    g_string_append(s, " |");
}

static void md_code_cell(GString *s, const char *t)
{
    g_string_append(s, " `");
    md_escape(s, t);
    g_string_append(s, "` |");
}

static gboolean write_png_chart(const char *path, VizDrawFn fn, const void *data, double w, double h,
                                const VizTheme *t, GError **error)
{
    return viz_render_file(path, w, h, 1.5, fn, data, t, error);
}

static gboolean report_md(GString *s, const VizReport *r, const char *base, const VizTheme *t, GError **error)
{
    g_string_append_printf(s, "# Edit report: patch set %" G_GINT64_FORMAT "\n\n", r->id);
    g_string_append_printf(s, "**%s** — %s (apply sequence %" G_GINT64_FORMAT ")\n\n", r->recipe_desc,
                           r->applied ? "applied" : "reverted", r->apply_seq);
    g_string_append(s, "## Provenance\n\n| | |\n|---|---|\n");
    const char *prov[][2] = { { "model", r->model_path }, { "model sha256", r->model_sha256 },
                              { "tokenizer sha256", r->tokenizer_sha256 }, { "edit database", r->db_path },
                              { "database made for", r->db_model_sha256 }, { "patch set checksum", r->checksum },
                              { "created", r->created_at }, { "applied", r->applied_at }, { "reverted", r->reverted_at },
                              { "origin", r->origin }, { "program", r->program }, { "report date", r->date } };
    for (size_t i = 0; i < G_N_ELEMENTS(prov); i++) {
        if (!prov[i][1]) continue;
        g_string_append_printf(s, "| %s |", prov[i][0]);
        md_code_cell(s, prov[i][1]);
        g_string_append_c(s, '\n');
    }
    g_string_append(s, "\n## Recipe\n\n```json\n");
    g_string_append(s, r->recipe_json ? r->recipe_json : "{}");
    g_string_append(s, "\n```\n\n## Tokens and variants\n\n| form | source tokens | target tokens | strategy | status |\n"
                       "|---|---|---|---|---|\n");
    GPtrArray *vr = variant_rows(r);
    for (guint i = 0; i + 4 < vr->len; i += 5) {
        g_string_append(s, "|");
        md_cell(s, g_ptr_array_index(vr, i));
        md_code_cell(s, g_ptr_array_index(vr, i + 1));
        md_code_cell(s, g_ptr_array_index(vr, i + 2));
        md_cell(s, g_ptr_array_index(vr, i + 3));
        md_cell(s, g_ptr_array_index(vr, i + 4));
        g_string_append_c(s, '\n');
    }
    g_ptr_array_unref(vr);
    g_string_append_printf(s, "\n## Rows touched per layer (%d rows)\n\n| layer | rows | mean ‖after − before‖ | tokens |\n"
                              "|---:|---:|---:|---|\n", r->n_rows);
    for (int i = 0; i < r->n_layers; i++) {
        g_string_append_printf(s, "| %d | %d | %.4f |", r->layers[i], r->rows_per_layer[i], r->mean_delta[i]);
        md_code_cell(s, g_ptr_array_index(r->layer_tokens, i));
        g_string_append_c(s, '\n');
    }
    g_string_append(s, "\n## Warnings\n\n");
    if (!r->warnings->len) g_string_append(s, "None.\n");
    for (guint i = 0; i < r->warnings->len; i++) g_string_append_printf(s, "- %s\n", (char *)g_ptr_array_index(r->warnings, i));
    if (r->has_shift) {
        char *png = g_strdup_printf("%s-%" G_GINT64_FORMAT "-shift.png", base, r->id);
        VizShiftChart c;
        viz_shift_chart_init(&c, &r->shift, r->shift_labels, r->tgt_answer_label, r->src_answer_label, "Top-k shift",
                             r->prompt, r->written_prompt);
        gboolean ok = write_png_chart(png, viz_draw_bars, &c.chart, 1200, 480, t, error);
        viz_shift_chart_clear(&c);
        if (!ok) {
            g_free(png);
            return FALSE;
        }
        char *bn = g_path_get_basename(png);
        g_string_append_printf(s, "\n## Top-k shift\n\nPrompt `%s`", r->prompt);
        if (r->written_prompt) g_string_append_printf(s, ", target written in: `%s`", r->written_prompt);
        g_string_append_printf(s, ".\n\n![top-k shift](%s)\n\n", bn);
        g_string_append_printf(s, "Probability moved (total variation) **%.3f**; KL(original ‖ edited) %.3f nats", r->shift.prob_moved,
                               r->shift.kl_orig_edited);
        if (isfinite(r->shift.kl_written_edited))
            g_string_append_printf(s, "; KL(written ‖ edited) %.3f nats", r->shift.kl_written_edited);
        g_string_append(s, ".\n\n| | original | written in | edited |\n|---|---:|---:|---:|\n");
        if (r->tgt_answer_label) {
            char *a = pct(r->shift.p_tgt[0]), *b = pct(r->shift.p_tgt[1]), *c2 = pct(r->shift.p_tgt[2]);
            g_string_append_printf(s, "| P(`%s`) target's answer | %s | %s | %s |\n", r->tgt_answer_label, a, b, c2);
            g_free(a), g_free(b), g_free(c2);
        }
        if (r->src_answer_label) {
            char *a = pct(r->shift.p_src[0]), *b = pct(r->shift.p_src[1]), *c2 = pct(r->shift.p_src[2]);
            g_string_append_printf(s, "| P(`%s`) source's answer | %s | %s | %s |\n", r->src_answer_label, a, b, c2);
            g_free(a), g_free(b), g_free(c2);
        }
        g_free(bn);
        g_free(png);
    }
    if (r->has_localize) {
        char *png = g_strdup_printf("%s-%" G_GINT64_FORMAT "-localize.png", base, r->id);
        VizLocalizeChart c;
        viz_localize_chart_init(&c, &r->loc, "Layer localization", r->prompt, r->tgt_answer_label, r->src_answer_label);
        gboolean ok = write_png_chart(png, viz_draw_grid, &c.chart, 1100, 760, t, error);
        viz_localize_chart_clear(&c);
        if (!ok) {
            g_free(png);
            return FALSE;
        }
        char *bn = g_path_get_basename(png);
        g_string_append_printf(s, "\n## Layer localization\n\n![localization](%s)\n\n| layer |", bn);
        for (int i = 0; i < r->loc.n; i++) g_string_append_printf(s, " %d |", r->loc.layers[i]);
        g_string_append(s, "\n|---|");
        for (int i = 0; i < r->loc.n; i++) g_string_append(s, "---:|");
        const struct { const char *name; const double *v; } rows[4] = {
            { "P(target) this layer only", r->loc.p_tgt_single }, { "P(target) layers up to here", r->loc.p_tgt_cumul },
            { "P(source) this layer only", r->loc.p_src_single }, { "P(source) layers up to here", r->loc.p_src_cumul } };
        for (int q = 0; q < 4; q++) {
            g_string_append_printf(s, "\n| %s |", rows[q].name);
            for (int i = 0; i < r->loc.n; i++) {
                char *p = pct(rows[q].v[i]);
                g_string_append_printf(s, " %s |", p);
                g_free(p);
            }
        }
        g_string_append(s, "\n");
        g_free(bn);
        g_free(png);
    }
    g_string_append(s, "\n## Metrics\n\n");
    if (r->has_metrics) {
        const StemEditScore *m = &r->score;
        char *v[8] = { frac_text(m->eff_strict, m->eff_n), frac_text(m->eff_loose, m->eff_n),
                       frac_text(m->para_strict, m->para_n), frac_text(m->para_loose, m->para_n),
                       frac_text(m->spec_kept, m->spec_n), frac_text(m->touched_kept, m->touched_n), NULL, NULL };
        g_string_append_printf(s, "| metric | strict | loose |\n|---|---:|---:|\n| efficacy (training phrasings) | %s | %s |\n"
                                  "| paraphrase (held-out phrasings) | %s | %s |\n| specificity (other countries' top-1 kept) | %s | |\n"
                                  "| specificity, prompts with an edited token | %s | |\n",
                               v[0], v[1], v[2], v[3], v[4], v[5]);
        if (m->flu_n)
            g_string_append_printf(s, "| fluency (n-gram entropy, bits) | %.2f → %.2f | |\n", m->flu_before / m->flu_n,
                                   m->flu_after / m->flu_n);
        for (int i = 0; i < 8; i++) g_free(v[i]);
        g_string_append(s, "\nRelation sweep (does the source now answer the target's value?):\n\n| relation | flipped |\n|---|---:|\n");
        for (int q = 0; q < REL_COUNT; q++) {
            char *f = frac_text(m->sweep_flip[q], m->sweep_n[q]);
            g_string_append_printf(s, "| %s | %s |\n", stem_relation_name((StemRelation)q), f);
            g_free(f);
        }
    } else {
        g_string_append_printf(s, "Not computed: %s.\n", r->metrics_note ? r->metrics_note : "?");
    }
    g_string_append(s, "\n## Sample generations (greedy)\n\n| prompt | before | after |\n|---|---|---|\n");
    for (int i = 0; i < r->n_gen; i++) {
        g_string_append(s, "|");
        md_cell(s, r->gen_prompt[i]);
        char *db = viz_display_text(r->gen_before[i]), *da = viz_display_text(r->gen_after[i]);
        md_code_cell(s, db);
        md_code_cell(s, da);
        g_free(db);
        g_free(da);
        g_string_append_c(s, '\n');
    }
    g_string_append(s, "\n## Commands\n\n");
    for (guint i = 0; i < r->commands->len; i++) {
        char **kv = g_strsplit(g_ptr_array_index(r->commands, i), "\t", 2);
        g_string_append_printf(s, "%s:\n\n```sh\n%s\n```\n\n", kv[0], kv[1]);
        g_strfreev(kv);
    }
    return TRUE;
}

/* ------------------------------------------------------------------ PDF */

#define PAGE_W 842.0   /* A4 landscape, points */
#define PAGE_H 595.0
#define MARGIN 36.0

typedef struct {
    VizDoc *doc;
    cairo_t *cr;
    const VizTheme *t;
    const VizReport *r;
    double y;
    int page_in_report;
} Pdf;

static void pdf_page_start(Pdf *p)
{
    cairo_t *cr = p->cr;
    const VizTheme *t = p->t;
    cairo_save(cr);
    cairo_rectangle(cr, 0, 0, PAGE_W, PAGE_H);
    cairo_set_source_rgba(cr, t->bg.r, t->bg.g, t->bg.b, 1);
    cairo_fill(cr);
    cairo_restore(cr);
    char *head = g_strdup_printf("Edit report · patch set %" G_GINT64_FORMAT " · %s", p->r->id, p->r->recipe_desc);
    viz_text(cr, t, head, 9, FALSE, FALSE, MARGIN, 16, 0, 0, PAGE_W - 2 * MARGIN - 60, t->muted, NULL);
    g_free(head);
    p->page_in_report++;
    char *foot = g_strdup_printf("%s · %s · page %d", p->r->program, p->r->date, viz_doc_pages(p->doc));
    viz_text(cr, t, foot, 8, FALSE, FALSE, PAGE_W - MARGIN, PAGE_H - 18, 1, 0, 0, t->muted, NULL);
    g_free(foot);
    cairo_save(cr);
    cairo_set_source_rgba(cr, t->grid.r, t->grid.g, t->grid.b, 1);
    cairo_set_line_width(cr, 0.8);
    cairo_move_to(cr, MARGIN, 30.5);
    cairo_line_to(cr, PAGE_W - MARGIN, 30.5);
    cairo_stroke(cr);
    cairo_restore(cr);
    p->y = 44;
}

static void pdf_new_page(Pdf *p)
{
    viz_doc_next_page(p->doc);
    p->cr = viz_doc_cairo(p->doc);
    pdf_page_start(p);
}

static void pdf_need(Pdf *p, double h)
{
    if (p->y + h > PAGE_H - 34) pdf_new_page(p);
}

static void pdf_heading(Pdf *p, const char *s)
{
    pdf_need(p, 60);
    double th = 0;
    viz_text(p->cr, p->t, s, 14, TRUE, FALSE, MARGIN, p->y, 0, 0, 0, p->t->fg, &th);
    p->y += th + 6;
}

static void pdf_para(Pdf *p, const char *s, double size, gboolean mono, VizColor c)
{
    double w = PAGE_W - 2 * MARGIN;
    double h = viz_text_paragraph_height(p->cr, p->t, s, size, mono, FALSE, w);
    pdf_need(p, h);
    viz_text_paragraph(p->cr, p->t, s, size, mono, FALSE, MARGIN, p->y, w, c);
    p->y += h + 5;
}

static void pdf_table(Pdf *p, VizTable *tb)
{
    double w = PAGE_W - 2 * MARGIN;
    int done = 0;
    /* a table split over pages keeps its header on each part */
    while (done < tb->n_rows || (tb->n_rows == 0 && done == 0)) {
        VizTable part = *tb;
        part.n_rows = tb->n_rows - done;
        part.cells = tb->cells + (size_t)done * tb->n_cols;
        if (done) part.title = NULL;
        double need = viz_chart_table_height(p->cr, &part, p->t, w);
        if (p->y + MIN(need, 80) > PAGE_H - 34) pdf_new_page(p);
        cairo_save(p->cr);
        cairo_translate(p->cr, MARGIN, p->y);
        int drawn = 0;
        double used = viz_chart_table_draw_ex(p->cr, &part, p->t, w, PAGE_H - 34 - p->y, &drawn);
        cairo_restore(p->cr);
        p->y += used + 10;
        if (tb->n_rows == 0) break;
        if (drawn == 0) {
            pdf_new_page(p);
            continue;
        }
        done += drawn;
        if (done < tb->n_rows) pdf_new_page(p);
    }
}

/* a chart in the rest of the page (a new page when less than min_h is left) */
static void pdf_chart(Pdf *p, VizDrawFn fn, const void *data, double min_h, double max_h)
{
    if (PAGE_H - 34 - p->y < min_h) pdf_new_page(p);
    double h = MIN(max_h, PAGE_H - 34 - p->y);
    cairo_save(p->cr);
    cairo_translate(p->cr, MARGIN - 12, p->y);
    cairo_rectangle(p->cr, 0, 0, PAGE_W - 2 * MARGIN + 24, h);
    cairo_clip(p->cr);
    fn(p->cr, data, p->t, PAGE_W - 2 * MARGIN + 24, h);
    cairo_restore(p->cr);
    p->y += h + 8;
}

static void report_pdf(Pdf *p)
{
    const VizReport *r = p->r;
    const VizTheme *t = p->t;
    pdf_page_start(p);
    /* title */
    char *title = g_strdup_printf("Patch set %" G_GINT64_FORMAT ": %s", r->id, r->recipe_desc);
    double th = 0;
    viz_text(p->cr, t, title, 20, TRUE, FALSE, MARGIN, p->y, 0, 0, PAGE_W - 2 * MARGIN, t->fg, &th);
    p->y += th + 2;
    g_free(title);
    char *state = g_strdup_printf("%s (apply sequence %" G_GINT64_FORMAT ") · %d rows in %d layers · created %s",
                                  r->applied ? "applied" : "reverted", r->apply_seq, r->n_rows, r->n_layers,
                                  r->created_at ? r->created_at : "?");
    pdf_para(p, state, 11, FALSE, t->muted);
    g_free(state);
    p->y += 4;

    /* provenance */
    const char *keys[] = { "model", "model sha256", "tokenizer sha256", "edit database", "database made for model",
                           "patch set checksum", "created", "applied", "reverted", "origin", "program", "report date" };
    const char *vals[] = { r->model_path, r->model_sha256, r->tokenizer_sha256, r->db_path, r->db_model_sha256,
                           r->checksum, r->created_at, r->applied_at, r->reverted_at, r->origin, r->program, r->date };
    const char *cells[2 * G_N_ELEMENTS(keys)];
    int n = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        if (!vals[i] || !*vals[i]) continue;
        cells[2 * n] = keys[i];
        cells[2 * n + 1] = vals[i];
        n++;
    }
    static const char *ph[2] = { "provenance", "" };
    VizTable prov = { NULL, 2, n, ph, cells, 0, 2, 10 };
    pdf_table(p, &prov);

    /* recipe */
    pdf_heading(p, "Recipe");
    pdf_para(p, r->recipe_json ? r->recipe_json : "{}", 9.5, TRUE, t->fg);

    /* variants */
    GPtrArray *vr = variant_rows(r);
    static const char *vh[5] = { "form", "source tokens", "target tokens", "strategy", "status" };
    VizTable vt = { "Tokens and variants", 5, (int)(vr->len / 5), vh, (const char *const *)vr->pdata, 0, 0x6, 10 };
    pdf_table(p, &vt);
    g_ptr_array_unref(vr);

    /* rows per layer */
    GPtrArray *lc = g_ptr_array_new_with_free_func(g_free);
    for (int i = 0; i < r->n_layers; i++) {
        g_ptr_array_add(lc, g_strdup_printf("%d", r->layers[i]));
        g_ptr_array_add(lc, g_strdup_printf("%d", r->rows_per_layer[i]));
        g_ptr_array_add(lc, g_strdup_printf("%.4f", r->mean_delta[i]));
        g_ptr_array_add(lc, g_strdup(g_ptr_array_index(r->layer_tokens, i)));
    }
    static const char *lh[4] = { "layer", "rows", "mean ‖after − before‖", "tokens" };
    VizTable lt = { "Rows touched per layer", 4, r->n_layers, lh, (const char *const *)lc->pdata, 0x7, 0x8, 10 };
    pdf_table(p, &lt);
    g_ptr_array_unref(lc);

    /* warnings */
    pdf_heading(p, "Warnings");
    if (!r->warnings->len) pdf_para(p, "None.", 10.5, FALSE, t->fg);
    for (guint i = 0; i < r->warnings->len; i++) {
        char *w = g_strdup_printf("• %s", (char *)g_ptr_array_index(r->warnings, i));
        pdf_para(p, w, 10.5, FALSE, t->fg);
        g_free(w);
    }

    /* top-k shift: its own page */
    if (r->has_shift) {
        pdf_new_page(p);
        VizShiftChart c;
        viz_shift_chart_init(&c, &r->shift, r->shift_labels, r->tgt_answer_label, r->src_answer_label, "Top-k shift",
                             r->prompt, r->written_prompt);
        pdf_chart(p, viz_draw_bars, &c.chart, 300, 470);
        viz_shift_chart_clear(&c);
    }
    if (r->has_localize) {
        pdf_new_page(p);
        VizLocalizeChart c;
        char *sub = g_strdup_printf("prompt: %s", r->prompt);
        viz_localize_chart_init(&c, &r->loc, "Layer localization", sub, r->tgt_answer_label, r->src_answer_label);
        pdf_chart(p, viz_draw_grid, &c.chart, 400, PAGE_H);
        viz_localize_chart_clear(&c);
        g_free(sub);
    }

    /* metrics */
    pdf_new_page(p);
    pdf_heading(p, "Metrics");
    if (r->has_metrics) {
        const StemEditScore *m = &r->score;
        char *v[6] = { frac_text(m->eff_strict, m->eff_n), frac_text(m->eff_loose, m->eff_n),
                       frac_text(m->para_strict, m->para_n), frac_text(m->para_loose, m->para_n),
                       frac_text(m->spec_kept, m->spec_n), frac_text(m->touched_kept, m->touched_n) };
        char *flu = m->flu_n ? g_strdup_printf("%.2f → %.2f bits", m->flu_before / m->flu_n, m->flu_after / m->flu_n)
                             : g_strdup("–");
        const char *mc[] = { "efficacy (training phrasings)", v[0], v[1],
                             "paraphrase (held-out phrasings)", v[2], v[3],
                             "specificity: other countries' top-1 kept", v[4], "",
                             "specificity: prompts containing an edited token", v[5], "",
                             "fluency: n-gram entropy of continuations", flu, "" };
        static const char *mh[3] = { "metric", "strict", "loose" };
        VizTable mt = { NULL, 3, 5, mh, mc, 0x6, 0, 10.5 };
        pdf_table(p, &mt);
        for (int i = 0; i < 6; i++) g_free(v[i]);
        g_free(flu);
        GPtrArray *sc = g_ptr_array_new_with_free_func(g_free);
        for (int q = 0; q < REL_COUNT; q++) {
            g_ptr_array_add(sc, g_strdup(stem_relation_name((StemRelation)q)));
            g_ptr_array_add(sc, frac_text(m->sweep_flip[q], m->sweep_n[q]));
        }
        static const char *sh[2] = { "relation", "source now answers the target's value" };
        VizTable st = { "Relation sweep (strict): the blast radius of moving all of a token's facts", 2, REL_COUNT, sh,
                        (const char *const *)sc->pdata, 0x2, 0, 10.5 };
        pdf_table(p, &st);
        g_ptr_array_unref(sc);
        pdf_para(p, "Strict: every answer token is the greedy argmax (teacher forced). Loose: log P(target's value) > "
                    "log P(source's value). Measured against the model without this patch set.", 9, FALSE, t->muted);
    } else {
        char *s = g_strdup_printf("Not computed: %s.", r->metrics_note ? r->metrics_note : "?");
        pdf_para(p, s, 10.5, FALSE, t->fg);
        g_free(s);
    }

    /* generations */
    pdf_heading(p, "Sample generations (greedy)");
    /* wrapped: one paragraph block per generation */
    for (int i = 0; i < r->n_gen; i++) {
        double w = PAGE_W - 2 * MARGIN;
        char *db = viz_display_text(r->gen_before[i]), *da = viz_display_text(r->gen_after[i]);
        char *pb = g_strdup_printf("before: %s%s", r->gen_prompt[i], db);
        char *pa = g_strdup_printf("after:  %s%s", r->gen_prompt[i], da);
        g_free(db);
        g_free(da);
        double h = viz_text_paragraph_height(p->cr, t, pb, 9.5, TRUE, FALSE, w) +
                   viz_text_paragraph_height(p->cr, t, pa, 9.5, TRUE, FALSE, w) + 10;
        pdf_need(p, h);
        pdf_para(p, pb, 9.5, TRUE, t->muted);
        pdf_para(p, pa, 9.5, TRUE, t->fg);
        p->y += 4;
        g_free(pb);
        g_free(pa);
    }

    /* commands */
    pdf_heading(p, "Commands");
    for (guint i = 0; i < r->commands->len; i++) {
        char **kv = g_strsplit(g_ptr_array_index(r->commands, i), "\t", 2);
        pdf_need(p, 34);
        pdf_para(p, kv[0], 10, FALSE, t->muted);
        p->y -= 3;
        pdf_para(p, kv[1], 9.5, TRUE, t->fg);
        g_strfreev(kv);
    }
}

/* ------------------------------------------------------------------ write */

gboolean viz_reports_write(VizReport *const *reports, int n, const char *path, const VizTheme *t, GError **error)
{
    const char *dot = strrchr(path, '.');
    if (dot && !g_ascii_strcasecmp(dot, ".json")) {
        JsonBuilder *b = json_builder_new();
        if (n == 1) {
            viz_report_to_json(reports[0], b);
        } else {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "reports");
            json_builder_begin_array(b);
            for (int i = 0; i < n; i++) viz_report_to_json(reports[i], b);
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        JsonGenerator *g = json_generator_new();
        JsonNode *root = json_builder_get_root(b);
        json_generator_set_root(g, root);
        json_generator_set_pretty(g, TRUE);
        gsize len = 0;
        char *s = json_generator_to_data(g, &len);
        gboolean ok = g_file_set_contents(path, s, (gssize)len, error);
        g_free(s);
        json_node_unref(root);
        g_object_unref(g);
        g_object_unref(b);
        return ok;
    }
    if (dot && !g_ascii_strcasecmp(dot, ".md")) {
        char *base = g_strndup(path, dot - path);
        GString *s = g_string_new(NULL);
        gboolean ok = TRUE;
        for (int i = 0; i < n && ok; i++) {
            if (i) g_string_append(s, "\n---\n\n");
            ok = report_md(s, reports[i], base, t, error);
        }
        if (ok) ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
        g_string_free(s, TRUE);
        g_free(base);
        return ok;
    }
    if (dot && !g_ascii_strcasecmp(dot, ".pdf")) {
        VizDoc *doc = viz_doc_new_pdf(path, PAGE_W, PAGE_H, error);
        if (!doc) return FALSE;
        for (int i = 0; i < n; i++) {
            if (i) viz_doc_next_page(doc);
            Pdf p = { doc, viz_doc_cairo(doc), t, reports[i], 0, 0 };
            report_pdf(&p);
        }
        return viz_doc_close(doc, error);
    }
    g_set_error(error, VIZ_ERROR, 42, "%s: unknown report format (expected .pdf, .md or .json)", path);
    return FALSE;
}
