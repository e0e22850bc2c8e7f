/* Tokenizer for tool text and queries (see tokenize.h). One pass over the bytes with a
 * one-byte look-ahead for the acronym rule; the token is assembled in a stack buffer. */
#include "search/tokenize.h"

#include <string.h>

#include "base/buf.h"

enum { C_SEP, C_LOWER, C_UPPER, C_DIGIT, C_HIGH };

static int byte_class(unsigned char c) {
  if (c >= 'a' && c <= 'z') return C_LOWER;
  if (c >= 'A' && c <= 'Z') return C_UPPER;
  if (c >= '0' && c <= '9') return C_DIGIT;
  if (c >= 0x80) return C_HIGH;
  return C_SEP;
}

/* Sorted (strcmp order) for binary search. Function words and the contraction tails the
 * separator rule leaves behind ("don't" -> don, t); kept small on purpose: words that can name
 * what a tool does ("now", "up", "down", "off", "over", "out") are not in it. */
static const char *const stop_words[] = {
    "a",     "about",   "after", "again", "all",   "am",     "an",    "and",  "any",    "are",    "as",      "at",
    "be",    "because", "been",  "being", "both",  "but",    "by",    "can",  "could",  "d",      "did",     "do",
    "does",  "doing",   "don",   "each",  "for",   "from",   "had",   "has",  "have",   "having", "he",      "her",
    "here",  "hers",    "him",   "his",   "how",   "i",      "if",    "in",   "into",   "is",     "it",      "its",
    "just",  "ll",      "m",     "me",    "might", "more",   "most",  "must", "my",     "myself", "of",      "on",
    "or",    "other",   "our",   "ours",  "re",    "s",      "shall", "she",  "should", "so",     "some",    "such",
    "t",     "than",    "that",  "the",   "their", "theirs", "them",  "then", "there",  "these",  "they",    "this",
    "those", "to",      "too",   "ve",    "very",  "was",    "we",    "were", "what",   "when",   "where",   "which",
    "while", "who",     "whom",  "why",   "will",  "with",   "would", "you",  "your",   "yours",  "yourself"};

bool ag_tok_is_stop_word(const char *w, size_t len) {
  size_t lo = 0, hi = AG_ARRAY_LEN(stop_words);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const char *s = stop_words[mid];
    size_t slen = strlen(s);
    int c = memcmp(w, s, len < slen ? len : slen);
    if (c == 0) c = len < slen ? -1 : len > slen ? 1 : 0;
    if (c == 0) return true;
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return false;
}

static bool is_vowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

static bool ends(const char *w, size_t n, const char *suf) {
  size_t k = strlen(suf);
  return n >= k && memcmp(w + n - k, suf, k) == 0;
}

static bool has_vowel(const char *w, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (is_vowel(w[i]) || (i > 0 && w[i] == 'y')) return true;
  return false;
}

/* Light stemming: not Porter, just the inflections tool text is full of. Words of three letters
 * or fewer are left alone, and a stem keeps at least three letters, so short words do not
 * collide ("uses" -> "use" but "us" stays). The steps run in order on one word:
 *   1. plurals: -sses -> -ss, -ies -> -i, -xes/-ches/-shes/-zes -> drop "es", -s -> drop (not
 *      after s, u, i: "class", "status", "analysis"; "news" is kept whole);
 *   2. -ing, -ed (a vowel left in the stem; not -eed), -ied -> -i; a doubled final consonant left
 *      behind is undoubled (running -> run), except ll, ss, zz;
 *   3. a final -e goes (not -ee), a final consonant+y becomes +i, so that "create", "creates",
 *      "created", "creating" meet at "creat" and "category", "categories" at "categori". */
void ag_tok_stem(char *w, size_t *len) {
  size_t n = *len;
  for (size_t i = 0; i < n; i++)
    if (w[i] < 'a' || w[i] > 'z') return;
  if (n < 4) return;
  if (n == 4 && memcmp(w, "news", 4) == 0) return;

  if (ends(w, n, "sses"))
    n -= 2;
  else if (ends(w, n, "ies"))
    n -= n > 4 ? 2 : 1;
  else if (ends(w, n, "ss") || ends(w, n, "us") || ends(w, n, "is"))
    ;
  else if (n > 4 && (ends(w, n, "xes") || ends(w, n, "ches") || ends(w, n, "shes") || ends(w, n, "zes")))
    n -= 2;
  else if (ends(w, n, "s"))
    n -= 1;

  size_t cut = 0;
  if (ends(w, n, "ing") && n >= 6 && has_vowel(w, n - 3))
    cut = 3;
  else if (ends(w, n, "ied") && n > 4)
    n -= 2, w[n - 1] = 'i';
  else if (ends(w, n, "ed") && !ends(w, n, "eed") && n >= 5 && has_vowel(w, n - 2))
    cut = 2;
  if (cut) {
    n -= cut;
    char c = w[n - 1];
    if (n >= 4 && c == w[n - 2] && !is_vowel(c) && c != 'l' && c != 's' && c != 'z') n--;
  } else if (n >= 4 && w[n - 1] == 'e' && w[n - 2] != 'e') {
    n--;
  }
  if (n >= 3 && w[n - 1] == 'y' && !is_vowel(w[n - 2])) w[n - 1] = 'i';
  *len = n;
}

void ag_tok_opts_default(ag_tok_opts *o) { *o = (ag_tok_opts){.stop_words = true, .stem = true}; }

typedef struct tok_state {
  const ag_tok_opts *o;
  ag_tok_fn fn;
  void *ud;
  char buf[AG_TOK_MAX_LEN + 1];
  size_t len;
  size_t max_len;
  int count;
  bool cut; /* bytes were dropped from the current token */
} tok_state;

static int flush(tok_state *st) {
  size_t n = st->len;
  st->len = 0;
  if (st->cut) n = ag_utf8_cut(st->buf, n); /* never end inside a UTF-8 sequence */
  st->cut = false;
  if (n == 0) return 0;
  if (st->o->stop_words && ag_tok_is_stop_word(st->buf, n)) return 0;
  if (st->o->stem) ag_tok_stem(st->buf, &n);
  st->buf[n] = '\0';
  int rc = st->fn(st->ud, st->buf, n);
  if (rc < 0) return rc;
  st->count++;
  return 0;
}

int ag_tokenize(const char *text, size_t len, const ag_tok_opts *opts, ag_tok_fn fn, void *ud) {
  ag_tok_opts defaults;
  if (!opts) {
    ag_tok_opts_default(&defaults);
    opts = &defaults;
  }
  tok_state st = {.o = opts, .fn = fn, .ud = ud};
  st.max_len = opts->max_token_len == 0               ? AG_TOK_DEFAULT_MAX_LEN
               : opts->max_token_len > AG_TOK_MAX_LEN ? AG_TOK_MAX_LEN
                                                      : opts->max_token_len;
  size_t max_tokens = opts->max_tokens ? opts->max_tokens : AG_TOK_DEFAULT_MAX_TOKENS;
  if (max_tokens > (size_t)(1u << 30)) max_tokens = 1u << 30;
  const unsigned char *t = (const unsigned char *)text;
  /* prev: the class of the previous byte; letter: of the last ASCII letter in this word, so that
   * non-ASCII letters count as lowercase after a lowercase letter ("naïveCase" splits before C)
   * and as uppercase after an uppercase one ("GRÖßE" stays whole). */
  int prev = C_SEP, letter = C_SEP;
  for (size_t i = 0; i < len && (size_t)st.count < max_tokens; i++) {
    int c = byte_class(t[i]);
    if (c == C_SEP) {
      if (st.len) {
        int rc = flush(&st);
        if (rc < 0) return rc;
      }
      prev = letter = c;
      continue;
    }
    bool boundary = false;
    if (prev != C_SEP) {
      if ((prev == C_DIGIT) != (c == C_DIGIT))
        boundary = true;
      else if (c == C_UPPER && (prev == C_LOWER || (prev == C_HIGH && letter != C_UPPER)))
        boundary = true;
      else if (c == C_UPPER && prev == C_UPPER && i + 1 < len && byte_class(t[i + 1]) == C_LOWER)
        boundary = true;
    }
    if (boundary || prev == C_SEP || prev == C_DIGIT) letter = C_SEP;
    if (c == C_LOWER || c == C_UPPER) letter = c;
    if (boundary && st.len) {
      int rc = flush(&st);
      if (rc < 0) return rc;
      if ((size_t)st.count >= max_tokens) break;
    }
    if (st.len < st.max_len)
      st.buf[st.len++] = (char)(c == C_UPPER ? t[i] + ('a' - 'A') : t[i]);
    else
      st.cut = true;
    prev = c;
  }
  if (st.len && (size_t)st.count < max_tokens) {
    int rc = flush(&st);
    if (rc < 0) return rc;
  }
  return st.count;
}
