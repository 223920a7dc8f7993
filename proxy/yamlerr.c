#include "proxy/yamlerr.h"

#include <stdio.h>

/* The line and column of a byte offset. */
static void offset_to_position(const char *text, size_t len, size_t offset, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

void af_yaml_error(const yaml_parser_t *p, const char *text, size_t len, int *line, int *col,
                   char *msg, size_t msg_len)
{
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_MEMORY_ERROR) {
        *line = *col = 0;
        snprintf(msg, msg_len, "out of memory while parsing YAML");
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        offset_to_position(text, len, p->problem_offset, line, col);
        if (p->problem_value != -1)
            snprintf(msg, msg_len, "%s (byte 0x%02X)", problem, (unsigned)p->problem_value);
        else
            snprintf(msg, msg_len, "%s", problem);
        return;
    }
    *line = (int)p->problem_mark.line + 1;
    *col = (int)p->problem_mark.column + 1;
    if (p->context)
        snprintf(msg, msg_len, "%s (%s at %d:%d)", problem, p->context,
                 (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    else
        snprintf(msg, msg_len, "%s", problem);
}
