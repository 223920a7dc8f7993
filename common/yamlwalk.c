/*
 * yamlwalk — see yamlwalk.h.
 */
#include "common/yamlwalk.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/cfgerr.h"

int af_yw_failf(struct af_yw *c, const yaml_node_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    af_cfg_errorv(c->err, c->errlen, c->name, at ? (int)at->start_mark.line + 1 : 0,
                  at ? (int)at->start_mark.column + 1 : 0, fmt, ap);
    va_end(ap);
    return -1;
}

const char *af_yw_scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int af_yw_walk_map(struct af_yw *c, const yaml_node_t *map, const char *what,
                   const struct af_yw_key *keys, size_t n_keys, void *obj)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return af_yw_failf(c, map, "%s: expected a mapping of keys to values", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *name = af_yw_scalar(k);
        if (!name)
            return af_yw_failf(c, k, "%s: a key must be a plain name", what);
        size_t i = 0;
        while (i < n_keys && strcmp(keys[i].name, name) != 0)
            i++;
        if (i == n_keys) {
            if (c->warn)
                af_cfg_warn(c->name, (int)k->start_mark.line + 1, (int)k->start_mark.column + 1,
                            "unknown key '%.*s' in %s is ignored", AF_YW_MAX_QUOTE, name, what);
            continue;
        }
        if (keys[i].parse && keys[i].parse(c, v, obj) < 0)
            return -1;
    }
    return 0;
}

int af_yw_parser_error(struct af_yw *c, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_MEMORY_ERROR)
        return af_yw_failf(c, NULL, "out of memory while parsing YAML");
    if (p->error == YAML_READER_ERROR)
        snprintf(c->err, c->errlen, "%s: %s at byte %zu", c->name, problem, p->problem_offset);
    else
        snprintf(c->err, c->errlen, "%s:%d:%d: %s", c->name, (int)p->problem_mark.line + 1,
                 (int)p->problem_mark.column + 1, problem);
    af_cfg_oneline(c->err);
    return -1;
}

int af_yw_load(struct af_yw *c, const char *text, size_t len, yaml_document_t *doc)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return af_yw_failf(c, NULL, "out of memory while parsing YAML");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, doc))
        rc = af_yw_parser_error(c, &parser);
    else
        c->doc = doc;
    yaml_parser_delete(&parser);
    return rc;
}
