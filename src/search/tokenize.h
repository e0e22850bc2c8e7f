/* Tokenizer for tool text (names, descriptions, parameter schemas, tags) and for search queries.
 *
 * A token is a run of ASCII letters, a run of ASCII digits, or part of a word that holds UTF-8
 * (bytes >= 0x80 are word bytes, kept as they are; only ASCII is lowercased). Anything else (space,
 * punctuation, '_', '-', '.', ...) separates tokens. Inside a word the tokenizer also splits where
 * identifiers join words, so that a tool name and a sentence meet on the same terms:
 *
 *   snake_case, kebab-case   -> separators          get_user-id        -> get, user, id
 *   camelCase                -> before an upper     getWeatherForecast -> get, weather, forecast
 *   acronym then a word      -> before its last     HTTPServer2        -> http, server, 2
 *   letters and digits       -> at the change       ipv4, mp3          -> ipv, 4 / mp, 3
 *
 * Then, per options: tokens in a small English stop-word list are dropped, and a light suffix
 * stripper (plurals, -ing, -ed, a final -e; ASCII words only) maps inflections to one stem:
 * "categories" -> "category", "booking"/"booked" -> "book", "create"/"created" -> "creat". The same
 * options must be used for documents and queries (the index does so).
 *
 * Caps: a token longer than max_token_len bytes is cut (never inside a UTF-8 sequence), and at
 * most max_tokens tokens are produced per text; the rest of the text is ignored. The tokenizer
 * allocates nothing and never fails by itself; input may be any bytes (NULs are separators). */
#ifndef AG_SEARCH_TOKENIZE_H
#define AG_SEARCH_TOKENIZE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#define AG_TOK_MAX_LEN 64 /* hard upper bound for max_token_len (the token buffer) */
#define AG_TOK_DEFAULT_MAX_LEN 32
#define AG_TOK_DEFAULT_MAX_TOKENS 4096

typedef struct ag_tok_opts {
  bool stop_words;      /* drop English stop words */
  bool stem;            /* light suffix stripping */
  size_t max_token_len; /* 1..AG_TOK_MAX_LEN; 0 = AG_TOK_DEFAULT_MAX_LEN */
  size_t max_tokens;    /* per text; 0 = AG_TOK_DEFAULT_MAX_TOKENS */
} ag_tok_opts;

/* The defaults: stop words on, stemming on, default caps. */
void ag_tok_opts_default(ag_tok_opts *o);

/* Called once per token, in text order. tok is NUL-terminated, len bytes long (1..max_token_len),
 * borrowed for the duration of the call. A negative result stops tokenization and is returned. */
typedef int (*ag_tok_fn)(void *ud, const char *tok, size_t len);

/* Tokenizes text[0..len) (text may be NULL when len is 0). opts NULL means the defaults. Returns
 * the number of tokens passed to fn (>= 0), or the first negative value fn returned. */
AG_MUST_CHECK int ag_tokenize(const char *text, size_t len, const ag_tok_opts *opts, ag_tok_fn fn, void *ud);

/* True if the lowercase ASCII word w[0..len) is in the stop-word list. */
bool ag_tok_is_stop_word(const char *w, size_t len);

/* Stems the lowercase word w[0..*len) in place (it only ever gets shorter) and updates *len;
 * words that hold a non-letter byte are left as they are. */
void ag_tok_stem(char *w, size_t *len);

#endif
