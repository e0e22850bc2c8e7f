/* HTML to readable text, and charsets (see html_text.h).
 *
 * One pass over the input with a few counters instead of a tree: "dropped" elements (head, nav,
 * template, svg, ...) count their own nesting and text is kept only while every count is zero;
 * raw-text elements (script, style, noscript, ...) are skipped to their end tag without looking
 * inside, as a browser does; breaks between blocks are pending requests ("one newline", "a blank
 * line") that are honoured only when the next visible character arrives, so empty elements and
 * runs of markup never pile up blank lines. Every scan that can miss its terminator (a comment,
 * a quoted attribute, a raw-text element) consumes the rest of the input instead, so the whole
 * conversion is linear in the input. */
#include "tools/html_text.h"

#include <stdint.h>
#include <string.h>

#define REPLACEMENT "\xEF\xBF\xBD"
#define MAX_LISTS 16
#define MAX_DROP_DEPTH 1000 /* nesting counted per dropped element; deeper is not tracked */

/* ---- UTF-8 and windows-1252 ---- */

/* Decodes the code point at s[0..len), len >= 1: its length (1..4), or 0 when the bytes there are
 * not a valid, shortest-form UTF-8 sequence of a scalar value. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v, min;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2, v = c & 0x1Fu, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, v = c & 0x0Fu, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, v = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (len < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = v << 6 | (s[i] & 0x3Fu);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

static size_t utf8_encode(uint32_t cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18);
  out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* windows-1252's 0x80..0x9F; the five bytes it leaves undefined map to the C1 controls. */
static const uint16_t cp1252_high[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

int ag_html_to_utf8(const char *doc, size_t len, int charset, ag_buf *out) {
  const unsigned char *s = (const unsigned char *)doc;
  size_t i = 0;
  if (charset == AG_CHARSET_UTF8 && len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) i = 3;
  while (i < len) {
    /* A run that needs no change is copied in one piece. */
    size_t j = i;
    uint32_t cp;
    size_t n = 0;
    if (charset == AG_CHARSET_UTF8) {
      while (j < len && s[j] != 0 && (n = utf8_decode(s + j, len - j, &cp)) > 0)
        j += n;
    } else {
      while (j < len && s[j] != 0 && s[j] < 0x80)
        j++;
    }
    if (j > i) {
      size_t room = out->max - out->len;
      if (j - i > room) {
        size_t cut = ag_utf8_cut((const char *)s + i, room);
        if (ag_buf_append(out, s + i, cut) < 0) return AG_ENOMEM;
        return AG_ETOOBIG;
      }
      if (ag_buf_append(out, s + i, j - i) < 0) return AG_ENOMEM;
      i = j;
      continue;
    }
    /* One byte that needs decoding or replacing. */
    char enc[4];
    if (s[i] == 0 || charset == AG_CHARSET_UTF8)
      cp = 0xFFFD;
    else
      cp = s[i] < 0xA0 ? cp1252_high[s[i] - 0x80] : s[i];
    size_t m = utf8_encode(cp, enc);
    if (m > out->max - out->len) return AG_ETOOBIG;
    if (ag_buf_append(out, enc, m) < 0) return AG_ENOMEM;
    i++;
  }
  return 0;
}

/* ---- charset detection ---- */

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

static bool ieq_n(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return false;
  return true;
}

/* Finds `needle` (lowercase) in s[0..len) ignoring case. */
static const char *ifind(const char *s, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (ieq_n(s + i, needle, n)) return s + i;
  return NULL;
}

/* ISO-8859-15 differs from windows-1252 in eight letters and signs; reading it as windows-1252
 * keeps every other accented letter, where UTF-8 would replace them all. */
static int charset_label(const char *s, size_t len) {
  static const char *const cp1252[] = {"iso-8859-1",     "iso8859-1",   "iso_8859-1", "latin1",      "l1",
                                       "windows-1252",   "cp1252",      "x-cp1252",   "us-ascii",    "ascii",
                                       "ansi_x3.4-1968", "iso-8859-15", "latin9",     "iso_8859-15", "cp819"};
  for (size_t i = 0; i < sizeof cp1252 / sizeof cp1252[0]; i++)
    if (strlen(cp1252[i]) == len && ieq_n(s, cp1252[i], len)) return AG_CHARSET_WINDOWS_1252;
  return AG_CHARSET_UTF8;
}

/* The value after "charset" in s[0..len) ("charset=x", "charset = 'x'"), or -1. */
static int charset_param(const char *s, size_t len) {
  const char *p = ifind(s, len, "charset");
  if (!p) return -1;
  const char *end = s + len;
  p += 7;
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  if (p == end || *p != '=') return -1;
  p++;
  while (p < end && (*p == ' ' || *p == '\t' || *p == '"' || *p == '\''))
    p++;
  const char *v = p;
  while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                     *p == '_' || *p == '.' || *p == ':'))
    p++;
  return p > v ? charset_label(v, (size_t)(p - v)) : -1;
}

int ag_html_detect_charset(const char *content_type, const char *doc, size_t len, bool html) {
  if (len >= 3 && (unsigned char)doc[0] == 0xEF && (unsigned char)doc[1] == 0xBB && (unsigned char)doc[2] == 0xBF)
    return AG_CHARSET_UTF8;
  if (content_type) {
    int cs = charset_param(content_type, strlen(content_type));
    if (cs >= 0) return cs;
  }
  if (!html) return AG_CHARSET_UTF8;
  size_t scan = len < 1024 ? len : 1024;
  const char *p = doc, *end = doc + scan;
  while (p < end) {
    const char *m = ifind(p, (size_t)(end - p), "<meta");
    if (!m) break;
    const char *gt = memchr(m, '>', (size_t)(end - m));
    size_t tag_len = gt ? (size_t)(gt - m) : (size_t)(end - m);
    int cs = charset_param(m, tag_len);
    if (cs >= 0) return cs;
    p = m + 5;
  }
  return AG_CHARSET_UTF8;
}

/* ---- entities ---- */

typedef struct entity {
  const char *name;
  uint32_t cp;
} entity;

/* The named references pages really use: markup, punctuation, symbols, Latin-1 letters, some
 * Greek and arithmetic. Others stay as written. */
static const entity entities[] = {
    {"amp", '&'},       {"lt", '<'},        {"gt", '>'},        {"quot", '"'},      {"apos", '\''},
    {"nbsp", 0xA0},     {"ensp", 0x2002},   {"emsp", 0x2003},   {"thinsp", 0x2009}, {"shy", 0xAD},
    {"zwnj", 0x200C},   {"zwj", 0x200D},    {"lrm", 0x200E},    {"rlm", 0x200F},    {"copy", 0xA9},
    {"reg", 0xAE},      {"trade", 0x2122},  {"hellip", 0x2026}, {"mdash", 0x2014},  {"ndash", 0x2013},
    {"lsquo", 0x2018},  {"rsquo", 0x2019},  {"sbquo", 0x201A},  {"ldquo", 0x201C},  {"rdquo", 0x201D},
    {"bdquo", 0x201E},  {"laquo", 0xAB},    {"raquo", 0xBB},    {"lsaquo", 0x2039}, {"rsaquo", 0x203A},
    {"bull", 0x2022},   {"middot", 0xB7},   {"deg", 0xB0},      {"plusmn", 0xB1},   {"times", 0xD7},
    {"divide", 0xF7},   {"euro", 0x20AC},   {"pound", 0xA3},    {"yen", 0xA5},      {"cent", 0xA2},
    {"curren", 0xA4},   {"sect", 0xA7},     {"para", 0xB6},     {"iexcl", 0xA1},    {"iquest", 0xBF},
    {"brvbar", 0xA6},   {"uml", 0xA8},      {"ordf", 0xAA},     {"ordm", 0xBA},     {"not", 0xAC},
    {"macr", 0xAF},     {"acute", 0xB4},    {"cedil", 0xB8},    {"frac12", 0xBD},   {"frac14", 0xBC},
    {"frac34", 0xBE},   {"sup1", 0xB9},     {"sup2", 0xB2},     {"sup3", 0xB3},     {"micro", 0xB5},
    {"dagger", 0x2020}, {"Dagger", 0x2021}, {"permil", 0x2030}, {"prime", 0x2032},  {"Prime", 0x2033},
    {"larr", 0x2190},   {"uarr", 0x2191},   {"rarr", 0x2192},   {"darr", 0x2193},   {"harr", 0x2194},
    {"lArr", 0x21D0},   {"rArr", 0x21D2},   {"hArr", 0x21D4},   {"minus", 0x2212},  {"le", 0x2264},
    {"ge", 0x2265},     {"ne", 0x2260},     {"asymp", 0x2248},  {"equiv", 0x2261},  {"infin", 0x221E},
    {"sum", 0x2211},    {"prod", 0x220F},   {"radic", 0x221A},  {"part", 0x2202},   {"nabla", 0x2207},
    {"isin", 0x2208},   {"forall", 0x2200}, {"exist", 0x2203},  {"empty", 0x2205},  {"and", 0x2227},
    {"or", 0x2228},     {"cap", 0x2229},    {"cup", 0x222A},    {"int", 0x222B},    {"there4", 0x2234},
    {"sim", 0x223C},    {"sub", 0x2282},    {"sup", 0x2283},    {"oplus", 0x2295},  {"perp", 0x22A5},
    {"loz", 0x25CA},    {"spades", 0x2660}, {"clubs", 0x2663},  {"hearts", 0x2665}, {"diams", 0x2666},
    {"frasl", 0x2044},  {"oline", 0x203E},  {"circ", 0x2C6},    {"tilde", 0x2DC},   {"fnof", 0x192},
    {"OElig", 0x152},   {"oelig", 0x153},   {"Scaron", 0x160},  {"scaron", 0x161},  {"Yuml", 0x178},
    {"alpha", 0x3B1},   {"beta", 0x3B2},    {"gamma", 0x3B3},   {"delta", 0x3B4},   {"epsilon", 0x3B5},
    {"zeta", 0x3B6},    {"eta", 0x3B7},     {"theta", 0x3B8},   {"iota", 0x3B9},    {"kappa", 0x3BA},
    {"lambda", 0x3BB},  {"mu", 0x3BC},      {"nu", 0x3BD},      {"xi", 0x3BE},      {"omicron", 0x3BF},
    {"pi", 0x3C0},      {"rho", 0x3C1},     {"sigmaf", 0x3C2},  {"sigma", 0x3C3},   {"tau", 0x3C4},
    {"upsilon", 0x3C5}, {"phi", 0x3C6},     {"chi", 0x3C7},     {"psi", 0x3C8},     {"omega", 0x3C9},
    {"Alpha", 0x391},   {"Beta", 0x392},    {"Gamma", 0x393},   {"Delta", 0x394},   {"Theta", 0x398},
    {"Lambda", 0x39B},  {"Pi", 0x3A0},      {"Sigma", 0x3A3},   {"Phi", 0x3A6},     {"Psi", 0x3A8},
    {"Omega", 0x3A9},   {"Agrave", 0xC0},   {"Aacute", 0xC1},   {"Acirc", 0xC2},    {"Atilde", 0xC3},
    {"Auml", 0xC4},     {"Aring", 0xC5},    {"AElig", 0xC6},    {"Ccedil", 0xC7},   {"Egrave", 0xC8},
    {"Eacute", 0xC9},   {"Ecirc", 0xCA},    {"Euml", 0xCB},     {"Igrave", 0xCC},   {"Iacute", 0xCD},
    {"Icirc", 0xCE},    {"Iuml", 0xCF},     {"ETH", 0xD0},      {"Ntilde", 0xD1},   {"Ograve", 0xD2},
    {"Oacute", 0xD3},   {"Ocirc", 0xD4},    {"Otilde", 0xD5},   {"Ouml", 0xD6},     {"Oslash", 0xD8},
    {"Ugrave", 0xD9},   {"Uacute", 0xDA},   {"Ucirc", 0xDB},    {"Uuml", 0xDC},     {"Yacute", 0xDD},
    {"THORN", 0xDE},    {"szlig", 0xDF},    {"agrave", 0xE0},   {"aacute", 0xE1},   {"acirc", 0xE2},
    {"atilde", 0xE3},   {"auml", 0xE4},     {"aring", 0xE5},    {"aelig", 0xE6},    {"ccedil", 0xE7},
    {"egrave", 0xE8},   {"eacute", 0xE9},   {"ecirc", 0xEA},    {"euml", 0xEB},     {"igrave", 0xEC},
    {"iacute", 0xED},   {"icirc", 0xEE},    {"iuml", 0xEF},     {"eth", 0xF0},      {"ntilde", 0xF1},
    {"ograve", 0xF2},   {"oacute", 0xF3},   {"ocirc", 0xF4},    {"otilde", 0xF5},   {"ouml", 0xF6},
    {"oslash", 0xF8},   {"ugrave", 0xF9},   {"uacute", 0xFA},   {"ucirc", 0xFB},    {"uuml", 0xFC},
    {"yacute", 0xFD},   {"thorn", 0xFE},    {"yuml", 0xFF},
};

/* The few references browsers also accept without the semicolon, as old pages write them. */
static bool entity_legacy(const char *name) {
  return strcmp(name, "amp") == 0 || strcmp(name, "lt") == 0 || strcmp(name, "gt") == 0 || strcmp(name, "quot") == 0 ||
         strcmp(name, "nbsp") == 0 || strcmp(name, "copy") == 0 || strcmp(name, "reg") == 0;
}

static const entity *entity_find(const char *s, size_t len) {
  for (size_t i = 0; i < sizeof entities / sizeof entities[0]; i++)
    if (strlen(entities[i].name) == len && memcmp(entities[i].name, s, len) == 0) return &entities[i];
  return NULL;
}

/* ---- tags ---- */

enum {
  TF_PARA = 1 << 0,     /* a blank line before and after */
  TF_LINE = 1 << 1,     /* a line break before and after */
  TF_DROP = 1 << 2,     /* the whole subtree is dropped */
  TF_RAW = 1 << 3,      /* raw text, skipped to the end tag */
  TF_HEAD_OK = 1 << 4,  /* may appear in <head> without closing it */
  TF_CELL = 1 << 5,     /* a table cell: " | " between cells */
  TF_LIST = 1 << 6,     /* ul, ol */
  TF_LI = 1 << 7,       /* li: a bullet or number */
  TF_HEADING = 1 << 8,  /* h1..h6: "#" marks */
  TF_PRE = 1 << 9,      /* whitespace kept */
  TF_BR = 1 << 10,      /* a line break */
  TF_TITLE = 1 << 11,   /* <title>, captured apart */
  TF_RCDATA = 1 << 12,  /* text without tags (textarea) */
  TF_BODY = 1 << 13,    /* <body>: ends <head> */
  TF_HEAD = 1 << 14,    /* <head> */
  TF_ORDERED = 1 << 15, /* ol */
};

typedef struct tag_info {
  const char *name;
  unsigned flags;
} tag_info;

static const tag_info tags[] = {
    {"p", TF_PARA},
    {"div", TF_LINE},
    {"br", TF_BR},
    {"h1", TF_HEADING},
    {"h2", TF_HEADING},
    {"h3", TF_HEADING},
    {"h4", TF_HEADING},
    {"h5", TF_HEADING},
    {"h6", TF_HEADING},
    {"ul", TF_LIST},
    {"ol", TF_LIST | TF_ORDERED},
    {"menu", TF_LIST},
    {"li", TF_LI},
    {"a", 0},
    {"span", 0},
    {"table", TF_PARA},
    {"tr", TF_LINE},
    {"td", TF_CELL},
    {"th", TF_CELL},
    {"caption", TF_LINE},
    {"blockquote", TF_PARA},
    {"pre", TF_PRE},
    {"hr", TF_PARA},
    {"dl", TF_PARA},
    {"dt", TF_LINE},
    {"dd", TF_LINE},
    {"figure", TF_PARA},
    {"figcaption", TF_LINE},
    {"address", TF_PARA},
    {"details", TF_PARA},
    {"summary", TF_LINE},
    {"fieldset", TF_PARA},
    {"legend", TF_LINE},
    {"section", TF_LINE},
    {"article", TF_LINE},
    {"main", TF_LINE},
    {"header", TF_LINE},
    {"footer", TF_LINE},
    {"aside", TF_LINE},
    {"hgroup", TF_LINE},
    {"center", TF_LINE},
    {"form", TF_LINE},
    {"option", TF_LINE},
    {"body", TF_BODY},
    {"html", TF_HEAD_OK},
    {"head", TF_DROP | TF_HEAD | TF_HEAD_OK},
    {"title", TF_TITLE | TF_HEAD_OK},
    {"meta", TF_HEAD_OK},
    {"link", TF_HEAD_OK},
    {"base", TF_HEAD_OK},
    {"script", TF_RAW | TF_HEAD_OK},
    {"style", TF_RAW | TF_HEAD_OK},
    {"noscript", TF_RAW | TF_HEAD_OK},
    {"template", TF_DROP | TF_HEAD_OK},
    {"xmp", TF_RAW},
    {"iframe", TF_RAW},
    {"noembed", TF_RAW},
    {"noframes", TF_RAW},
    {"plaintext", TF_RAW},
    {"textarea", TF_RCDATA},
    {"nav", TF_DROP},
    {"svg", TF_DROP},
    {"select", TF_DROP},
    {"datalist", TF_DROP},
    {"canvas", TF_DROP},
    {"video", TF_DROP},
    {"audio", TF_DROP},
    {"object", TF_DROP},
    {"button", 0},
};

#define N_TAGS (sizeof tags / sizeof tags[0])

/* The tag whose name is s[0..len) (ASCII case-insensitive), or -1. */
static int tag_find(const char *s, size_t len) {
  if (len == 0 || len > 10) return -1;
  for (size_t i = 0; i < N_TAGS; i++)
    if (strlen(tags[i].name) == len && ieq_n(s, tags[i].name, len)) return (int)i;
  return -1;
}

/* ---- the converter ---- */

typedef struct conv {
  ag_buf *out;
  ag_buf *title;
  bool full; /* out is at its cap (or out of memory): stop */
  bool oom;
  bool to_title; /* inside <title>: text goes to title */
  bool title_space;
  bool title_done;
  /* pending layout, honoured before the next visible character */
  int pending_nl; /* 0, 1 or 2 newlines */
  bool pending_space;
  bool pending_sep;
  char prefix[48];
  size_t prefix_len;
  int nl_run; /* newlines at the end of out */
  int drop[N_TAGS];
  int dropping; /* sum of drop[] */
  int head;     /* index of "head" in tags */
  int pre;
  bool pre_first; /* a newline right after <pre> is not content */
  int lists;      /* list depth, also beyond MAX_LISTS */
  struct {
    bool ordered;
    int n;
  } list[MAX_LISTS];
} conv;

static void put(conv *c, const char *p, size_t n) {
  if (c->full || n == 0) return;
  if (n > c->out->max - c->out->len) {
    /* Whole characters only: keep what fits of this piece, then stop. */
    size_t cut = ag_utf8_cut(p, c->out->max - c->out->len);
    if (cut && ag_buf_append(c->out, p, cut) < 0) c->oom = true;
    c->full = true;
    return;
  }
  if (ag_buf_append(c->out, p, n) < 0) {
    c->oom = c->full = true;
    return;
  }
  size_t k = 0;
  while (k < n && p[n - 1 - k] == '\n')
    k++;
  c->nl_run = k == n ? c->nl_run + (int)k : (int)k;
}

static void want_nl(conv *c, int n) {
  if (c->pending_nl < n) c->pending_nl = n;
}

static void flush(conv *c) {
  if (c->out->len == 0) {
    c->pending_nl = 0;
    c->pending_space = c->pending_sep = false;
  }
  if (c->pending_nl) {
    for (int k = c->nl_run; k < c->pending_nl; k++)
      put(c, "\n", 1);
  } else if (c->pending_sep && c->nl_run == 0) {
    put(c, " | ", 3);
  } else if (c->pending_space && c->nl_run == 0) {
    put(c, " ", 1);
  }
  if (c->prefix_len && (c->nl_run > 0 || c->out->len == 0)) put(c, c->prefix, c->prefix_len);
  c->pending_nl = 0;
  c->pending_space = c->pending_sep = false;
  c->prefix_len = 0;
}

static void close_head(conv *c) {
  c->dropping -= c->drop[c->head];
  c->drop[c->head] = 0;
}

static bool is_space(uint32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f' || cp == 0xA0 || cp == 0x2002 ||
         cp == 0x2003 || cp == 0x2009;
}

/* Characters that carry nothing for a reader: controls, soft hyphens, zero-width marks. */
static bool is_invisible(uint32_t cp) {
  return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r' && cp != '\f') || cp == 0x7F || cp == 0xAD ||
         (cp >= 0x200B && cp <= 0x200F) || cp == 0x2060 || cp == 0xFEFF;
}

static void title_put(conv *c, const char *p, size_t n) {
  ag_buf *t = c->title;
  if (c->title_done || !t) return;
  if (n > t->max - t->len) {
    c->title_done = true;
    return;
  }
  if (ag_buf_append(t, p, n) < 0) c->oom = c->full = true;
}

/* One character of text; bytes is its UTF-8 form. */
static void text_cp(conv *c, uint32_t cp, const char *bytes, size_t n) {
  if (is_invisible(cp)) return;
  bool ws = is_space(cp);
  if (c->to_title) {
    if (ws) {
      c->title_space = c->title && c->title->len > 0;
    } else {
      if (c->title_space) title_put(c, " ", 1);
      c->title_space = false;
      title_put(c, bytes, n);
    }
    return;
  }
  if (c->dropping) {
    /* Text in <head> ends it, as in a browser; anywhere else dropped text is dropped. */
    if (ws || c->dropping != c->drop[c->head]) return;
    close_head(c);
  }
  if (c->pre) {
    if (cp == '\r') return;
    if (c->pre_first && cp == '\n') {
      c->pre_first = false;
      return;
    }
    c->pre_first = false;
    flush(c);
    if (cp == '\n') {
      put(c, "\n", 1);
    } else if (ws) {
      put(c, cp == '\t' ? "\t" : " ", 1);
    } else {
      put(c, bytes, n);
    }
    return;
  }
  if (ws) {
    c->pending_space = true;
    return;
  }
  if (c->pending_nl || c->pending_space || c->pending_sep || c->prefix_len) flush(c);
  put(c, bytes, n);
}

/* Text from s[i] up to `end`, or to the next '<' when lt_stops, or the next '&'. */
static size_t text_run(conv *c, const char *s, size_t end, size_t i, bool lt_stops) {
  const unsigned char *u = (const unsigned char *)s;
  while (i < end && !c->full) {
    if (u[i] == '&' || (lt_stops && u[i] == '<')) break;
    uint32_t cp;
    size_t n = u[i] ? utf8_decode(u + i, end - i, &cp) : 0;
    if (n == 0) {
      text_cp(c, 0xFFFD, REPLACEMENT, 3);
      i++;
    } else {
      text_cp(c, cp, s + i, n);
      i += n;
    }
  }
  return i;
}

static bool is_alpha(unsigned char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
static bool is_digit(unsigned char ch) { return ch >= '0' && ch <= '9'; }
static bool is_hex(unsigned char ch) { return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
static bool is_tag_space(unsigned char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f'; }

static uint32_t numeric_cp(uint32_t v) {
  if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0xFFFD;
  if (v >= 0x80 && v <= 0x9F) return cp1252_high[v - 0x80]; /* as browsers do */
  return v;
}

/* A character reference at s[i] == '&'; unknown ones stay as written. */
static size_t entity_at(conv *c, const char *s, size_t end, size_t i) {
  const unsigned char *u = (const unsigned char *)s;
  size_t j = i + 1;
  uint32_t cp = 0;
  bool ok = false;
  if (j < end && u[j] == '#') {
    j++;
    bool hex = j < end && (u[j] == 'x' || u[j] == 'X');
    if (hex) j++;
    size_t d0 = j;
    uint32_t v = 0;
    while (j < end && (hex ? is_hex(u[j]) : is_digit(u[j]))) {
      unsigned d = is_digit(u[j]) ? (unsigned)(u[j] - '0') : (unsigned)(lower(u[j]) - 'a' + 10);
      if (v <= 0x10FFFF) v = v * (hex ? 16u : 10u) + d; /* saturates past the last code point */
      j++;
    }
    if (j > d0) {
      if (j < end && u[j] == ';') j++;
      cp = numeric_cp(v);
      ok = true;
    }
  } else {
    size_t k = j;
    while (k < end && k - j < 16 && (is_alpha(u[k]) || is_digit(u[k])))
      k++;
    const entity *e = k > j ? entity_find(s + j, k - j) : NULL;
    bool semi = k < end && u[k] == ';';
    if (e && (semi || entity_legacy(e->name))) {
      cp = e->cp;
      j = k + (semi ? 1 : 0);
      ok = true;
    }
  }
  if (!ok) {
    text_cp(c, '&', "&", 1);
    return i + 1;
  }
  char enc[4];
  size_t n = utf8_encode(cp, enc);
  text_cp(c, cp, enc, n);
  return j;
}

/* Skips to just past the next '>' from i (or to the end). */
static size_t skip_to_gt(const char *s, size_t len, size_t i) {
  const char *gt = i < len ? memchr(s + i, '>', len - i) : NULL;
  return gt ? (size_t)(gt - s) + 1 : len;
}

/* Where the end tag </name...> of a raw-text element starts, at or after i (or len). */
static size_t find_end_tag(const char *s, size_t len, size_t i, const char *name) {
  size_t n = strlen(name);
  while (i < len) {
    const char *lt = memchr(s + i, '<', len - i);
    if (!lt) return len;
    size_t p = (size_t)(lt - s);
    if (p + 2 + n <= len && s[p + 1] == '/' && ieq_n(s + p + 2, name, n) &&
        (p + 2 + n == len || is_tag_space((unsigned char)s[p + 2 + n]) || s[p + 2 + n] == '/' || s[p + 2 + n] == '>'))
      return p;
    i = p + 1;
  }
  return len;
}

static void set_prefix(conv *c, const char *p, size_t n) {
  if (n > sizeof c->prefix) n = sizeof c->prefix;
  memcpy(c->prefix, p, n);
  c->prefix_len = n;
}

static void list_item(conv *c) {
  want_nl(c, 1);
  char b[sizeof c->prefix];
  int depth = c->lists < 1 ? 1 : c->lists > MAX_LISTS ? MAX_LISTS : c->lists;
  size_t n = 0;
  for (int k = 1; k < depth && n + 2 < sizeof b - 16; k++) {
    b[n++] = ' ';
    b[n++] = ' ';
  }
  if (c->lists >= 1 && c->lists <= MAX_LISTS && c->list[c->lists - 1].ordered) {
    int num = ++c->list[c->lists - 1].n;
    char d[16];
    size_t dn = 0;
    do {
      d[dn++] = (char)('0' + num % 10);
      num /= 10;
    } while (num && dn < 10);
    while (dn)
      b[n++] = d[--dn];
    b[n++] = '.';
    b[n++] = ' ';
  } else {
    b[n++] = '-';
    b[n++] = ' ';
  }
  set_prefix(c, b, n);
}

static void start_tag(conv *c, int t, bool self_closing) {
  unsigned f = tags[t].flags;
  if (f & TF_BODY) close_head(c);
  if (c->drop[c->head] && !(f & TF_HEAD_OK) && c->dropping == c->drop[c->head]) close_head(c);
  if (f & TF_DROP) {
    if (!self_closing && c->drop[t] < MAX_DROP_DEPTH) {
      c->drop[t]++;
      c->dropping++;
    }
    return;
  }
  if (c->dropping) return;
  if (f & TF_PARA) want_nl(c, 2);
  if (f & TF_LINE) want_nl(c, 1);
  if (f & TF_BR) want_nl(c, c->pending_nl >= 1 ? 2 : 1); /* <br><br> leaves a blank line */
  if (f & TF_CELL) c->pending_sep = true;
  if (f & TF_HEADING) {
    want_nl(c, 2);
    int level = tags[t].name[1] - '0';
    set_prefix(c, "###### ", (size_t)level);
    c->prefix[level] = ' ';
    c->prefix_len = (size_t)level + 1;
  }
  if (f & TF_LIST) {
    if (c->lists < MAX_LISTS) {
      c->list[c->lists].ordered = (f & TF_ORDERED) != 0;
      c->list[c->lists].n = 0;
    }
    if (c->lists < 1000000) c->lists++;
    want_nl(c, c->lists == 1 ? 2 : 1);
  }
  if (f & TF_LI) list_item(c);
  if ((f & TF_PRE) && !self_closing) {
    if (c->pre < MAX_DROP_DEPTH) c->pre++;
    c->pre_first = true;
    want_nl(c, 2);
  }
}

static void end_tag(conv *c, int t) {
  unsigned f = tags[t].flags;
  if (f & TF_DROP) {
    if (c->drop[t] > 0) {
      c->drop[t]--;
      c->dropping--;
    }
    return;
  }
  if (c->dropping) return;
  if (f & (TF_PARA | TF_HEADING)) want_nl(c, 2);
  if (f & (TF_LINE | TF_LI)) want_nl(c, 1);
  if (f & TF_BR) want_nl(c, 1); /* </br> is a <br> to browsers */
  if (f & (TF_LI | TF_HEADING)) c->prefix_len = 0;
  if (f & TF_LIST) {
    if (c->lists > 0) c->lists--;
    want_nl(c, c->lists == 0 ? 2 : 1);
  }
  if ((f & TF_PRE) && c->pre > 0) {
    c->pre--;
    want_nl(c, 2);
  }
}

/* RCDATA (title, textarea): text and references, no tags, up to the end tag. */
static size_t rcdata(conv *c, const char *s, size_t len, size_t i, const char *name, bool to_title) {
  size_t end = find_end_tag(s, len, i, name);
  c->to_title = to_title;
  while (i < end && !c->full) {
    if (s[i] == '&')
      i = entity_at(c, s, end, i);
    else
      i = text_run(c, s, end, i, false);
  }
  c->to_title = false;
  if (to_title && c->title && c->title->len) c->title_done = true; /* the first title only */
  return end;
}

/* Markup at s[i] == '<': returns where text resumes. */
static size_t markup(conv *c, const char *s, size_t len, size_t i) {
  const unsigned char *u = (const unsigned char *)s;
  if (i + 1 >= len) {
    text_cp(c, '<', "<", 1);
    return len;
  }
  unsigned char n = u[i + 1];
  if (n == '!') {
    if (i + 4 <= len && memcmp(s + i, "<!--", 4) == 0) {
      size_t j = i + 4;
      if (j < len && s[j] == '>') return j + 1; /* <!--> */
      if (j + 1 < len && s[j] == '-' && s[j + 1] == '>') return j + 2;
      for (; j + 3 <= len; j++)
        if (s[j] == '-' && s[j + 1] == '-' && s[j + 2] == '>') return j + 3;
      return len;
    }
    return skip_to_gt(s, len, i + 2); /* doctype, CDATA and other bogus comments */
  }
  if (n == '?') return skip_to_gt(s, len, i + 2);
  if (n == '/') {
    size_t j = i + 2;
    if (j < len && is_alpha(u[j])) {
      size_t k = j;
      while (k < len && !is_tag_space(u[k]) && u[k] != '/' && u[k] != '>')
        k++;
      int t = tag_find(s + j, k - j);
      if (t >= 0) end_tag(c, t);
      return skip_to_gt(s, len, k);
    }
    return skip_to_gt(s, len, j);
  }
  if (!is_alpha(n)) {
    text_cp(c, '<', "<", 1);
    return i + 1;
  }
  /* A start tag: its name, then attributes, quoted values may hold '>'. */
  size_t j = i + 1;
  while (j < len && !is_tag_space(u[j]) && u[j] != '/' && u[j] != '>')
    j++;
  int t = tag_find(s + i + 1, j - i - 1);
  bool self_closing = false;
  for (;;) {
    while (j < len && is_tag_space(u[j]))
      j++;
    if (j >= len) return len; /* the input ends inside a tag: it never was one */
    if (u[j] == '>') {
      j++;
      break;
    }
    if (u[j] == '/') {
      j++;
      if (j < len && u[j] == '>') {
        self_closing = true;
        j++;
        break;
      }
      continue;
    }
    while (j < len && !is_tag_space(u[j]) && u[j] != '/' && u[j] != '>' && u[j] != '=')
      j++;
    while (j < len && is_tag_space(u[j]))
      j++;
    if (j < len && u[j] == '=') {
      j++;
      while (j < len && is_tag_space(u[j]))
        j++;
      if (j < len && (u[j] == '"' || u[j] == '\'')) {
        const char *q = memchr(s + j + 1, s[j], len - j - 1);
        if (!q) return len;
        j = (size_t)(q - s) + 1;
      } else {
        while (j < len && !is_tag_space(u[j]) && u[j] != '>')
          j++;
      }
    }
  }
  if (t < 0) return j;
  unsigned f = tags[t].flags;
  if (f & TF_RAW) {
    start_tag(c, t, self_closing);
    return find_end_tag(s, len, j, tags[t].name);
  }
  if (f & TF_TITLE) {
    if (c->drop[c->head] == c->dropping && !c->title_done) return rcdata(c, s, len, j, "title", true);
    return find_end_tag(s, len, j, "title");
  }
  if (f & TF_RCDATA) {
    start_tag(c, t, self_closing);
    if (c->dropping) return find_end_tag(s, len, j, tags[t].name);
    want_nl(c, 1);
    return rcdata(c, s, len, j, tags[t].name, false);
  }
  start_tag(c, t, self_closing);
  return j;
}

int ag_html_text(const char *html, size_t len, ag_buf *out, ag_buf *title, bool *truncated) {
  conv c;
  memset(&c, 0, sizeof c);
  c.out = out;
  c.title = title;
  c.head = tag_find("head", 4);
  /* Appending to a buffer that already holds text: breaks are measured from its end. */
  for (size_t k = out->len; k > 0 && out->ptr[k - 1] == '\n'; k--)
    c.nl_run++;
  size_t i = 0;
  while (i < len && !c.full) {
    if (html[i] == '<')
      i = markup(&c, html, len, i);
    else if (html[i] == '&')
      i = entity_at(&c, html, len, i);
    else
      i = text_run(&c, html, len, i, true);
  }
  if (truncated) *truncated = c.full && !c.oom;
  return c.oom ? AG_ENOMEM : 0;
}
