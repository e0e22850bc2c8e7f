/* Incremental JSON string-value scanner (see json_scan.h).
 *
 * A small state machine over bytes. It validates structure loosely (enough to keep the path
 * right); numbers and literals are skipped as runs of non-delimiters. Decoded string bytes are
 * batched in s->out and flushed to the callback at the end of each feed, when the buffer fills,
 * and when the string ends. A fragment never ends inside a UTF-8 sequence: an incomplete one is
 * held back until its remaining bytes arrive. Bytes pass through as they came (the model's own
 * UTF-8); only escapes are decoded. */
#include "base/json_scan.h"

#include <string.h>

#include "base/buf.h"

enum {
  S_VALUE,      /* expecting a value */
  S_KEY_OR_END, /* in an object, expecting a key or '}' */
  S_KEY,        /* expecting a key (after ',') */
  S_COLON,      /* after a key, expecting ':' */
  S_AFTER,      /* after a value, expecting ',' or a closing bracket */
  S_STR,        /* inside a string */
  S_ESC,        /* after a backslash */
  S_UHEX,       /* reading \uXXXX */
  S_ARR_FIRST,  /* after '[', expecting a value or ']' */
  S_LITERAL,    /* inside a number or true/false/null */
  S_DONE,       /* top-level value complete */
};

void ag_json_scan_init(ag_json_scan *s, ag_json_scan_fn cb, void *ud) {
  memset(s, 0, sizeof *s);
  s->cb = cb;
  s->ud = ud;
  s->state = S_VALUE;
}

bool ag_json_scan_failed(const ag_json_scan *s) { return s->failed; }

static void flush(ag_json_scan *s, bool done) {
  if (s->in_key || (!s->outlen && !done)) return;
  /* Mid-string, hold back an incomplete UTF-8 sequence so that no fragment splits a character. */
  size_t n = done ? s->outlen : ag_utf8_cut(s->out, s->outlen);
  if (!n && !done) return;
  const char *path[AG_JSON_SCAN_MAX_DEPTH];
  for (int i = 0; i < s->depth; i++)
    path[i] = s->kind[i] == 'o' ? s->keys[i] : NULL;
  if (s->cb) s->cb(path, (size_t)s->depth, s->out, n, done, s->ud);
  memmove(s->out, s->out + n, s->outlen - n);
  s->outlen -= n;
}

static void emit(ag_json_scan *s, const char *p, size_t n) {
  if (s->in_key) {
    for (size_t i = 0; i < n; i++) {
      if (s->keylen < AG_JSON_SCAN_MAX_KEY)
        s->keys[s->depth - 1][s->keylen++] = p[i];
      else
        s->key_overflow = true;
    }
    s->keys[s->depth - 1][s->keylen] = '\0';
    return;
  }
  while (n) {
    size_t room = sizeof s->out - s->outlen;
    size_t k = n < room ? n : room;
    memcpy(s->out + s->outlen, p, k);
    s->outlen += k;
    p += k;
    n -= k;
    if (s->outlen == sizeof s->out) flush(s, false);
  }
}

static void emit_code(ag_json_scan *s, unsigned cp) {
  char b[4];
  size_t n;
  if (cp < 0x80) {
    b[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    b[0] = (char)(0xC0 | (cp >> 6));
    b[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = (char)(0xE0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    b[0] = (char)(0xF0 | (cp >> 18));
    b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  emit(s, b, n);
}

static bool fail(ag_json_scan *s) {
  s->failed = true;
  return false;
}

/* A value (or a key's string) just ended: decide what comes next. */
static void value_done(ag_json_scan *s) { s->state = s->depth == 0 ? S_DONE : S_AFTER; }

static bool push(ag_json_scan *s, char kind) {
  if (s->depth >= AG_JSON_SCAN_MAX_DEPTH) return fail(s);
  s->kind[s->depth] = kind;
  s->keys[s->depth][0] = '\0';
  s->depth++;
  s->state = kind == 'o' ? S_KEY_OR_END : S_ARR_FIRST;
  return true;
}

static bool pop(ag_json_scan *s, char kind) {
  if (s->depth == 0 || s->kind[s->depth - 1] != kind) return fail(s);
  s->depth--;
  value_done(s);
  return true;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool start_value(ag_json_scan *s, char c) {
  switch (c) {
  case '{': return push(s, 'o');
  case '[': return push(s, 'a');
  case '"':
    s->in_key = false;
    s->state = S_STR;
    return true;
  default:
    if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
      s->state = S_LITERAL;
      return true;
    }
    return fail(s);
  }
}

bool ag_json_scan_feed(ag_json_scan *s, const char *data, size_t len) {
  if (s->failed) return false;
  size_t i = 0;
  while (i < len) {
    char c = data[i];
    switch (s->state) {
    case S_STR: {
      /* Copy the longest run without quote, backslash or control characters in one go. */
      size_t j = i;
      while (j < len && data[j] != '"' && data[j] != '\\' && (unsigned char)data[j] >= 0x20)
        j++;
      if (j > i) {
        if (s->high) return fail(s); /* lone high surrogate */
        emit(s, data + i, j - i);
        i = j;
        continue;
      }
      if (c == '"') {
        if (s->high) return fail(s);
        if (s->in_key) {
          s->in_key = false;
          s->state = S_COLON;
        } else {
          flush(s, true);
          value_done(s);
        }
      } else if (c == '\\') {
        s->state = S_ESC;
      } else {
        return fail(s); /* raw control character */
      }
      break;
    }
    case S_ESC: {
      const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t";
      const char *m = c ? strchr(map, c) : NULL;
      if (c == 'u') {
        s->ucount = 0;
        s->ucode = 0;
        s->state = S_UHEX;
        break;
      }
      if (!m || ((m - map) & 1)) return fail(s);
      if (s->high) return fail(s);
      emit(s, m + 1, 1);
      s->state = S_STR;
      break;
    }
    case S_UHEX: {
      int h = hexval(c);
      if (h < 0) return fail(s);
      s->ucode = (s->ucode << 4) | (unsigned)h;
      if (++s->ucount < 4) break;
      s->state = S_STR;
      unsigned cp = s->ucode;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (s->high) return fail(s);
        s->high = cp;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        if (!s->high) return fail(s);
        emit_code(s, 0x10000 + ((s->high - 0xD800) << 10) + (cp - 0xDC00));
        s->high = 0;
      } else {
        if (s->high) return fail(s);
        emit_code(s, cp);
      }
      /* A high surrogate must be followed directly by "\u": S_STR fails on anything else. */
      break;
    }
    case S_VALUE:
      if (!is_ws(c) && !start_value(s, c)) return false;
      break;
    case S_ARR_FIRST:
      if (is_ws(c)) break;
      if (c == ']') {
        if (!pop(s, 'a')) return false;
      } else if (!start_value(s, c)) {
        return false;
      }
      break;
    case S_KEY_OR_END:
    case S_KEY:
      if (is_ws(c)) break;
      if (c == '}' && s->state == S_KEY_OR_END) {
        if (!pop(s, 'o')) return false;
      } else if (c == '"') {
        s->in_key = true;
        s->keylen = 0;
        s->key_overflow = false;
        s->keys[s->depth - 1][0] = '\0';
        s->state = S_STR;
      } else {
        return fail(s);
      }
      break;
    case S_COLON:
      if (is_ws(c)) break;
      if (c != ':') return fail(s);
      if (s->key_overflow) s->keys[s->depth - 1][0] = '\x01'; /* matches no real key */
      s->state = S_VALUE;
      break;
    case S_LITERAL:
      if (is_ws(c) || c == ',' || c == '}' || c == ']') {
        value_done(s);
        continue; /* re-read the delimiter in the new state */
      }
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' || c == 'E'))
        return fail(s);
      break;
    case S_AFTER:
      if (is_ws(c)) break;
      if (c == ',') {
        s->state = s->kind[s->depth - 1] == 'o' ? S_KEY : S_VALUE;
      } else if (c == '}') {
        if (!pop(s, 'o')) return false;
      } else if (c == ']') {
        if (!pop(s, 'a')) return false;
      } else {
        return fail(s);
      }
      break;
    case S_DONE:
      if (!is_ws(c)) return fail(s);
      break;
    }
    i++;
  }
  if (s->state == S_STR || s->state == S_ESC || s->state == S_UHEX) flush(s, false);
  return true;
}
