/*
 * yamlerr — what a libyaml parser error says, and where, for the one-line
 * errors of app.yaml and dispatch.yaml ("FILE:LINE:COL: problem").
 */
#ifndef AF_YAMLERR_H
#define AF_YAMLERR_H

#include <stddef.h>

#include <yaml.h>

/*
 * The position (1-based; 0 and 0 when there is none, out of memory) and
 * the text of the error parser p stopped on while reading the len bytes at
 * text. libyaml gives reader (encoding) errors as a byte offset, the others
 * as a mark, with the context they arose in.
 */
void af_yaml_error(const yaml_parser_t *p, const char *text, size_t len, int *line, int *col,
                   char *msg, size_t msg_len);

#endif
