/* The fast path of the stream assembler (openai_internal.h): most chunks of a streamed answer are
 * one content delta,
 *
 *   {"id":"...","object":"chat.completion.chunk","created":1,"model":"m",
 *    "choices":[{"index":0,"delta":{"content":"..."},"finish_reason":null}]}
 *
 * and building a jansson tree for each of them was half the CPU of a session. This reader walks
 * such a chunk once without allocating and hands back the content (decoded into a caller's
 * buffer) and the model. It accepts only that shape: members it does not know, a second choice,
 * tool calls, a finish reason, usage that is not null, anything unusual — it answers "not mine"
 * and the caller parses the chunk in full. So it never has to be right about anything but the
 * plain case, and fuzz_openai_stream checks that it agrees with the full parser there. */
#include <string.h>

#include "llm/openai_internal.h"

typedef struct rd {
  const char *p, *end;
} rd;

static void ws(rd *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
    r->p++;
}

static bool lit(rd *r, char c) {
  ws(r);
  if (r->p < r->end && *r->p == c) {
    r->p++;
    return true;
  }
  return false;
}

static bool word(rd *r, const char *w) {
  ws(r);
  size_t n = strlen(w);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return false;
  r->p += n;
  return true;
}

static int hexval(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

static bool hex4(rd *r, unsigned *out) {
  if (r->end - r->p < 4) return false;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(r->p[i]);
    if (h < 0) return false;
    v = v << 4 | (unsigned)h;
  }
  r->p += 4;
  *out = v;
  return true;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* A JSON string, decoded into out (which has room for cap bytes; NULL: only skipped). Control
 * characters, bad escapes, lone surrogates and non-UTF-8 bytes are refused (jansson refuses them
 * too, and agreeing with it is the point). */
static bool str(rd *r, char *out, size_t cap, size_t *len) {
  ws(r);
  if (r->p >= r->end || *r->p != '"') return false;
  r->p++;
  size_t n = 0;
  while (r->p < r->end) {
    /* A run of plain ASCII first: most content is nothing else. */
    const char *q = r->p;
    while (q < r->end && (unsigned char)*q >= 0x20 && (unsigned char)*q < 0x80 && *q != '"' && *q != '\\')
      q++;
    if (q > r->p) {
      size_t k = (size_t)(q - r->p);
      if (out) {
        if (n + k > cap) return false;
        memcpy(out + n, r->p, k);
      }
      n += k;
      r->p = q;
      continue;
    }
    unsigned char c = (unsigned char)*r->p;
    if (c == '"') {
      r->p++;
      if (len) *len = n;
      return true;
    }
    if (c < 0x20) return false;
    char tmp[4];
    size_t k;
    if (c == '\\') {
      if (r->end - r->p < 2) return false;
      char e = r->p[1];
      r->p += 2;
      unsigned cp;
      switch (e) {
      case '"': tmp[0] = '"', k = 1; break;
      case '\\': tmp[0] = '\\', k = 1; break;
      case '/': tmp[0] = '/', k = 1; break;
      case 'b': tmp[0] = '\b', k = 1; break;
      case 'f': tmp[0] = '\f', k = 1; break;
      case 'n': tmp[0] = '\n', k = 1; break;
      case 'r': tmp[0] = '\r', k = 1; break;
      case 't': tmp[0] = '\t', k = 1; break;
      case 'u':
        if (!hex4(r, &cp)) return false;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo;
          if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') return false;
          r->p += 2;
          if (!hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) return false; /* jansson refuses \u0000 in strings it returns as C text */
        k = put_utf8(tmp, cp);
        break;
      default: return false;
      }
      if (out) {
        if (n + k > cap) return false;
        memcpy(out + n, tmp, k);
      }
      n += k;
      continue;
    }
    /* A UTF-8 sequence, copied as it is once it is well formed. */
    size_t sl = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!sl || (size_t)(r->end - r->p) < sl || !ag_utf8_valid(r->p, sl)) return false;
    if (out) {
      if (n + sl > cap) return false;
      memcpy(out + n, r->p, sl);
    }
    n += sl;
    r->p += sl;
  }
  return false;
}

/* A number made of digits only (created, index). */
static bool digits(rd *r, long long *v) {
  ws(r);
  const char *s = r->p;
  long long x = 0;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9' && r->p - s < 15)
    x = x * 10 + (*r->p++ - '0');
  if (r->p == s || (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E' || (*r->p >= '0' && *r->p <= '9'))))
    return false;
  if (v) *v = x;
  return true;
}

/* The key of the next member ("key":), into k (NUL-terminated; keys longer than k are refused). */
static bool key(rd *r, char *k, size_t cap) {
  size_t n;
  if (!str(r, k, cap - 1, &n)) return false;
  k[n] = '\0';
  return lit(r, ':');
}

/* The delta object: role (a string), content (a string or null), refusal (null). */
static bool delta(rd *r, ag__openai_chunk *o) {
  if (!lit(r, '{')) return false;
  if (lit(r, '}')) return true;
  do {
    char k[16];
    if (!key(r, k, sizeof k)) return false;
    if (strcmp(k, "content") == 0) {
      if (word(r, "null")) continue;
      size_t n;
      if (o->have_content || !str(r, o->content, o->cap, &n)) return false;
      o->have_content = true;
      o->content_len = n;
    } else if (strcmp(k, "role") == 0) {
      if (!str(r, NULL, 0, NULL)) return false;
    } else if (strcmp(k, "refusal") == 0) {
      if (!word(r, "null")) return false;
    } else {
      return false; /* tool_calls, function_call, ...: the full parser's */
    }
  } while (lit(r, ','));
  return lit(r, '}');
}

static bool choice(rd *r, ag__openai_chunk *o) {
  if (!lit(r, '{')) return false;
  bool seen_delta = false;
  if (lit(r, '}')) return false;
  do {
    char k[16];
    if (!key(r, k, sizeof k)) return false;
    if (strcmp(k, "index") == 0) {
      long long i;
      if (!digits(r, &i) || i != 0) return false;
    } else if (strcmp(k, "delta") == 0) {
      if (seen_delta || !delta(r, o)) return false;
      seen_delta = true;
    } else if (strcmp(k, "finish_reason") == 0 || strcmp(k, "logprobs") == 0) {
      if (!word(r, "null")) return false;
    } else {
      return false;
    }
  } while (lit(r, ','));
  return seen_delta && lit(r, '}');
}

int ag__openai_chunk_fast(const char *p, size_t n, ag__openai_chunk *o) {
  rd r = {p, p + n};
  o->have_content = false;
  o->content_len = 0;
  o->model = NULL;
  o->model_len = 0;
  if (!lit(&r, '{')) return 0;
  bool seen_choices = false, seen_model = false;
  if (lit(&r, '}')) return 0;
  do {
    char k[24];
    if (!key(&r, k, sizeof k)) return 0;
    if (strcmp(k, "choices") == 0) {
      if (seen_choices || !lit(&r, '[') || !choice(&r, o) || !lit(&r, ']')) return 0;
      seen_choices = true;
    } else if (strcmp(k, "model") == 0) {
      ws(&r);
      const char *s = r.p + 1;
      size_t len;
      /* Kept only when it needs no decoding, so it can point into the chunk. */
      if (seen_model || !str(&r, NULL, 0, &len) || (size_t)(r.p - 1 - s) != len) return 0;
      seen_model = true;
      o->model = s;
      o->model_len = len;
    } else if (strcmp(k, "id") == 0 || strcmp(k, "object") == 0 || strcmp(k, "system_fingerprint") == 0 ||
               strcmp(k, "service_tier") == 0 || strcmp(k, "obfuscation") == 0) {
      if (!str(&r, NULL, 0, NULL) && !word(&r, "null")) return 0;
    } else if (strcmp(k, "created") == 0) {
      if (!digits(&r, NULL)) return 0;
    } else if (strcmp(k, "usage") == 0) {
      if (!word(&r, "null")) return 0;
    } else {
      return 0; /* error, or anything we do not know */
    }
  } while (lit(&r, ','));
  if (!lit(&r, '}') || !seen_choices) return 0;
  ws(&r);
  return r.p == r.end ? 1 : 0;
}
