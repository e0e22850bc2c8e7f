/* Readable text from fetched documents, for a model to read: charset detection, decoding to valid
 * UTF-8, and an HTML to text converter (extract_page_content in tools/web.c).
 *
 * The converter is deliberately not an HTML5 tree builder: it tokenises tags, comments and text,
 * drops what a reader never sees (script, style, noscript, head, nav, template, svg, ...), keeps
 * the text of headings, paragraphs, lists, tables and links, writes headings as "#" lines and
 * list items as indented "- " or "1. " lines, decodes entities (the common named ones and all
 * numeric ones) and collapses whitespace outside <pre>. Its input is anything a web server
 * sends: it never reads past the input, keeps fixed state, and its output is always valid UTF-8
 * within the output buffer's cap (tests/fuzz/fuzz_html_text.c checks exactly that). */
#ifndef AG_TOOLS_HTML_TEXT_H
#define AG_TOOLS_HTML_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

enum ag_charset {
  AG_CHARSET_UTF8 = 0,
  /* windows-1252, which is also what ISO-8859-1 and US-ASCII labels mean on the web (WHATWG). */
  AG_CHARSET_WINDOWS_1252 = 1,
};

/* The charset of a document: a UTF-8 byte-order mark wins; then the charset parameter of the
 * Content-Type header value (may be NULL); then, for HTML, a <meta charset> or <meta http-equiv
 * content="...; charset=..."> within the first 1024 bytes; else UTF-8. Labels other than UTF-8 and
 * the windows-1252 family are read as UTF-8 (their non-ASCII bytes then become U+FFFD). */
int ag_html_detect_charset(const char *content_type, const char *doc, size_t len, bool html);

/* Appends doc, decoded from charset, to out as valid UTF-8: invalid sequences, NUL and lone
 * surrogates become U+FFFD; a leading UTF-8 byte-order mark is dropped. If out's cap is reached,
 * as much as fits is appended, cut at a character boundary, and AG_ETOOBIG is returned. */
AG_MUST_CHECK int ag_html_to_utf8(const char *doc, size_t len, int charset, ag_buf *out);

/* Converts an HTML document (UTF-8; invalid bytes become U+FFFD) to text appended to out. At
 * out's cap the text is cut at a character boundary and *truncated set (truncated may be NULL).
 * title (may be NULL) receives the <title>, whitespace collapsed, cut at its own cap. Returns 0
 * or AG_ENOMEM. */
AG_MUST_CHECK int ag_html_text(const char *html, size_t len, ag_buf *out, ag_buf *title, bool *truncated);

#endif
