/* Unit tests for app/yaml_json (the YAML reader) and app/sgr_config (the sgr-agent-core import).
 * The example installation is in tests/data/sgr/ (the tests run from the repository root). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "app/sgr_config.h"
#include "app/yaml_json.h"
#include "base/json.h"

#define DATA "tests/data/sgr"

/* ------------------------------------------------------------------------------------------------
 * Helpers */

static ag_json *yaml_ok(const char *text) {
  ag_json *j = NULL;
  char err[256];
  int rc = ag_yaml_to_json(text, strlen(text), &j, err, sizeof err);
  if (rc != 0) fail_msg("unexpected YAML error %d: %s\n%s", rc, err, text);
  assert_string_equal(err, "");
  return j;
}

/* Parses text that must fail with rc; returns the message in err. */
static void yaml_fails(const char *text, size_t len, int rc, char *err, size_t errlen) {
  ag_json *j = (ag_json *)1;
  assert_int_equal(ag_yaml_to_json(text, len, &j, err, errlen), rc);
  assert_null(j);
  assert_true(err[0] != '\0');
}

static void assert_dump(const ag_json *j, const char *want) {
  char *s = ag_json_dumps(j);
  assert_non_null(s);
  assert_string_equal(s, want);
  free(s);
}

static void assert_yaml_json(const char *yaml, const char *want) {
  ag_json *j = yaml_ok(yaml);
  assert_dump(j, want);
  ag_json_free(j);
}

static bool has_warning(const ag_json *warnings, const char *needle) {
  for (size_t i = 0; i < ag_json_len(warnings); i++)
    if (strstr(ag_json_str(ag_json_at(warnings, i)), needle)) return true;
  return false;
}

static size_t count_warnings(const ag_json *warnings, const char *needle) {
  size_t n = 0;
  for (size_t i = 0; i < ag_json_len(warnings); i++)
    if (strstr(ag_json_str(ag_json_at(warnings, i)), needle)) n++;
  return n;
}

static void assert_warning(const ag_json *warnings, const char *needle) {
  if (!has_warning(warnings, needle)) {
    char *all = ag_json_dumps(warnings);
    fail_msg("no warning contains \"%s\"; warnings: %s", needle, all);
  }
}

static const ag_json *doc_named(const ag_json *docs, const char *name) {
  for (size_t i = 0; i < ag_json_len(docs); i++) {
    const ag_json *d = ag_json_at(docs, i);
    if (strcmp(ag_json_get_str(d, "name"), name) == 0) return d;
  }
  fail_msg("no document named %s", name);
  return NULL;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strdup(buf);
}

static void assert_prompt_file(const ag_json *doc, const char *key, const char *path) {
  char *want = read_text(path);
  const char *have = ag_json_get_str(ag_json_get(doc, "prompts"), key);
  assert_non_null(have);
  assert_string_equal(have, want);
  free(want);
}

/* Converts YAML text (the same root for global and agents) with base_dir. */
static int convert_text(const char *yaml, const char *base_dir, ag_json **docs, ag_json **warnings, char *err,
                        size_t errlen) {
  ag_json *root = yaml_ok(yaml);
  int rc = ag_sgr_config_convert(root, root, base_dir, docs, warnings, err, errlen);
  ag_json_free(root);
  if (rc < 0) {
    assert_null(*docs);
    assert_null(*warnings);
    assert_true(err[0] != '\0');
  }
  return rc;
}

static void convert_fails(const char *yaml, const char *base_dir, int want_rc, const char *const *needles) {
  ag_json *docs = NULL, *warnings = NULL;
  char err[1024];
  int rc = convert_text(yaml, base_dir, &docs, &warnings, err, sizeof err);
  if (rc != want_rc) fail_msg("rc %d (want %d): %s", rc, want_rc, err);
  for (size_t i = 0; needles[i]; i++)
    if (!strstr(err, needles[i])) fail_msg("error \"%s\" does not contain \"%s\"", err, needles[i]);
}

/* ------------------------------------------------------------------------------------------------
 * YAML reader */

static void test_yaml_scalars(void **state) {
  (void)state;
  assert_yaml_json("n1: null\nn2: ~\nn3:\nn4: Null\nn5: NULL\n"
                   "b1: true\nb2: True\nb3: FALSE\nb4: yes\n"
                   "i1: 42\ni2: -17\ni3: +3\ni4: 0o17\ni5: 0x1F\ni6: 007\ni7: -9223372036854775808\n"
                   "i8: 9223372036854775807\ni9: 9223372036854775808\ni10: 0x10000000000000000\ni11: -0x10\n"
                   "f1: 1.5\nf2: -2.5e3\nf3: .5\nf4: 1e999\nf5: .inf\nf6: -.Inf\nf7: .nan\nf8: 3.\nf9: 1_000\n"
                   "s1: hello world\ns2: '42'\ns3: \"true\"\ns4: 2024-01-01\ns5: 0o9\ns6: !!str 12\n"
                   "t1: !!int \"12\"\nt2: !!float 3\nt3: !!bool true\nt4: !!null ''\n",
                   "{\"n1\":null,\"n2\":null,\"n3\":null,\"n4\":null,\"n5\":null,"
                   "\"b1\":true,\"b2\":true,\"b3\":false,\"b4\":\"yes\","
                   "\"i1\":42,\"i2\":-17,\"i3\":3,\"i4\":15,\"i5\":31,\"i6\":7,\"i7\":-9223372036854775808,"
                   "\"i8\":9223372036854775807,\"i9\":\"9223372036854775808\",\"i10\":\"0x10000000000000000\","
                   "\"i11\":\"-0x10\","
                   "\"f1\":1.5,\"f2\":-2500.0,\"f3\":0.5,\"f4\":\"1e999\",\"f5\":\".inf\",\"f6\":\"-.Inf\","
                   "\"f7\":\".nan\",\"f8\":3.0,\"f9\":\"1_000\","
                   "\"s1\":\"hello world\",\"s2\":\"42\",\"s3\":\"true\",\"s4\":\"2024-01-01\",\"s5\":\"0o9\","
                   "\"s6\":\"12\",\"t1\":12,\"t2\":3.0,\"t3\":true,\"t4\":null}");
  /* Block scalars, escapes, multi-byte text, a NUL from an escape. */
  assert_yaml_json("lit: |\n  one\n  two\nfold: >-\n  a\n  b\nesc: \"tab\\there \\u00e9 \\U0001F600\"\n"
                   "raw: caf\xc3\xa9\nnul: \"a\\0b\"\n",
                   "{\"lit\":\"one\\ntwo\\n\",\"fold\":\"a b\",\"esc\":\"tab\\there \xc3\xa9 \xf0\x9f\x98\x80\","
                   "\"raw\":\"caf\xc3\xa9\",\"nul\":\"a\\u0000b\"}");
  /* Keys are always text, whatever they look like. */
  assert_yaml_json("1: a\ntrue: b\n~: c\n", "{\"1\":\"a\",\"true\":\"b\",\"~\":\"c\"}");
  /* A root that is not a mapping is returned as it is. */
  assert_yaml_json("[1, 2]", "[1,2]");
  assert_yaml_json("just text", "\"just text\"");
}

static void test_yaml_nesting(void **state) {
  (void)state;
  assert_yaml_json("agents:\n  b_agent:\n    tools:\n      - X\n      - {name: Y, on: [1, 2]}\n  a_agent: {}\n"
                   "list:\n- - 1\n  - 2\n- []\n",
                   "{\"agents\":{\"b_agent\":{\"tools\":[\"X\",{\"name\":\"Y\",\"on\":[1,2]}]},\"a_agent\":{}},"
                   "\"list\":[[1,2],[]]}");
  assert_yaml_json("? explicit\n: value\n", "{\"explicit\":\"value\"}");
}

static void test_yaml_errors(void **state) {
  (void)state;
  char err[256];
  yaml_fails("a: [1, 2\n", 9, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 1: did not find expected ',' or ']' (while parsing a flow sequence at "
                           "line 1, column 4)");
  yaml_fails("a: 1\n b: 2\n", 11, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 3: mapping values are not allowed in this context");
  yaml_fails("a:\n\tb: 1\n", 9, AG_EINVAL, err, sizeof err);
  assert_true(strncmp(err, "line 2, column 1: ", 18) == 0);
  yaml_fails("a: \"open\n", 9, AG_EINVAL, err, sizeof err);
  assert_true(strncmp(err, "line 2, column 1: found unexpected end of stream", 48) == 0);
  yaml_fails("x: !!int abc\n", 13, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 4: \"abc\" is not a valid !!int");
  yaml_fails("x: !python/object:os.system ls\n", 31, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 4: the tag !python/object:os.system is not supported");
  yaml_fails("x: !!set {a, b}\n", 16, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 4: the tag tag:yaml.org,2002:set is not supported here");
  yaml_fails("[a, b]: 1\n", 10, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 1: a mapping key must be a scalar");
  yaml_fails("\"k\\0\": 1\n", 9, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 1: a mapping key must not contain a NUL character");
  /* A short err buffer is filled and terminated, never overrun. */
  char tiny[12];
  yaml_fails("a: [1, 2\n", 9, AG_EINVAL, tiny, sizeof tiny);
  assert_string_equal(tiny, "line 2, col");
  /* No err buffer at all is fine. */
  ag_json *j = NULL;
  assert_int_equal(ag_yaml_to_json("a: [", 4, &j, NULL, 0), AG_EINVAL);
  assert_null(j);
}

static void test_yaml_duplicate_keys(void **state) {
  (void)state;
  char err[256];
  yaml_fails("a: 1\nb: 2\na: 3\n", 15, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 3, column 1: duplicate key \"a\"");
  yaml_fails("outer:\n  x: 1\n  'x': 2\n", 23, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 3, column 3: duplicate key \"x\"");
  /* The same key in different mappings is fine. */
  assert_yaml_json("a: {x: 1}\nb: {x: 2}\n", "{\"a\":{\"x\":1},\"b\":{\"x\":2}}");
}

static void test_yaml_aliases(void **state) {
  (void)state;
  /* Aliases are copies: the two values are equal but not shared. */
  ag_json *j = yaml_ok("base: &b {model: m, t: 0.5}\nuse: *b\nlist: &l [1, *b]\nagain: *l\nname: &n text\nref: *n\n");
  assert_dump(j, "{\"base\":{\"model\":\"m\",\"t\":0.5},\"use\":{\"model\":\"m\",\"t\":0.5},"
                 "\"list\":[1,{\"model\":\"m\",\"t\":0.5}],\"again\":[1,{\"model\":\"m\",\"t\":0.5}],"
                 "\"name\":\"text\",\"ref\":\"text\"}");
  assert_true(ag_json_get(j, "base") != ag_json_get(j, "use"));
  ag_json_free(j);
  /* Merge keys: explicit keys win wherever they stand, earlier sources win over later ones. */
  assert_yaml_json("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  y: 0\n  <<: [*a, *b]\n  w: 3\n",
                   "{\"a\":{\"x\":1,\"y\":1},\"b\":{\"y\":2,\"z\":2},\"c\":{\"y\":0,\"w\":3,\"x\":1,\"z\":2}}");
  assert_yaml_json("'<<': quoted is a plain key\n", "{\"<<\":\"quoted is a plain key\"}");
  /* An alias may be a key when it names a scalar. */
  assert_yaml_json("k: &k name\n*k : v\n", "{\"k\":\"name\",\"name\":\"v\"}");
  /* A later anchor of the same name replaces the earlier one. */
  assert_yaml_json("a: &x 1\nb: &x 2\nc: *x\n", "{\"a\":1,\"b\":2,\"c\":2}");

  char err[256];
  yaml_fails("a: *nowhere\n", 12, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 4: unknown alias *nowhere");
  yaml_fails("a: &r [1, *r]\n", 14, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 11: the alias *r refers to a node that contains it");
  yaml_fails("a: &z \"k\\0z\"\n*z : 2\n", 20, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 1: a mapping key must not contain a NUL character");
  yaml_fails("a: &s {x: 1}\n*s : 2\n", 20, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 1: a mapping key must be a scalar");
  yaml_fails("a: {<<: 5}\n", 11, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 9: the value of a merge key \"<<\" must be a mapping or a sequence of "
                           "mappings");
}

static void test_yaml_billion_laughs(void **state) {
  (void)state;
  /* Nine levels of ten aliases each: 10^9 nodes if expanded. It must stop at the budget. */
  char doc[2048];
  size_t n = (size_t)snprintf(doc, sizeof doc, "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
  for (int i = 1; i <= 9; i++) {
    n += (size_t)snprintf(doc + n, sizeof doc - n, "l%d: &l%d [", i, i);
    for (int k = 0; k < 10; k++)
      n += (size_t)snprintf(doc + n, sizeof doc - n, "%s*l%d", k ? ", " : "", i - 1);
    n += (size_t)snprintf(doc + n, sizeof doc - n, "]\n");
  }
  char err[256];
  yaml_fails(doc, n, AG_ETOOBIG, err, sizeof err);
  assert_non_null(strstr(err, "expands to more than 100000 nodes"));
  assert_true(strncmp(err, "line 5, column ", 15) == 0); /* level 4 would reach 111,110 nodes */
  /* Four levels (11,110 nodes) fit. */
  char *cut = strstr(doc, "l4:");
  *cut = '\0';
  ag_json *j = yaml_ok(doc);
  assert_int_equal(ag_json_len(ag_json_get(j, "l3")), 10);
  ag_json_free(j);
}

static void test_yaml_depth(void **state) {
  (void)state;
  char doc[512];
  memset(doc, '[', 64);
  memset(doc + 64, ']', 64);
  ag_json *j = NULL;
  char err[256];
  assert_int_equal(ag_yaml_to_json(doc, 128, &j, err, sizeof err), 0);
  ag_json_free(j);
  memset(doc, '[', 65);
  memset(doc + 65, ']', 65);
  yaml_fails(doc, 130, AG_ETOOBIG, err, sizeof err);
  assert_string_equal(err, "line 1, column 65: collections nested more than 64 deep");
  /* Through an alias: 40 levels anchored, used 30 levels down inside a mapping. */
  size_t n = (size_t)snprintf(doc, sizeof doc, "a: &a ");
  for (int i = 0; i < 40; i++)
    doc[n++] = '[';
  for (int i = 0; i < 40; i++)
    doc[n++] = ']';
  n += (size_t)snprintf(doc + n, sizeof doc - n, "\nb: ");
  for (int i = 0; i < 30; i++)
    doc[n++] = '[';
  n += (size_t)snprintf(doc + n, sizeof doc - n, "*a");
  for (int i = 0; i < 30; i++)
    doc[n++] = ']';
  yaml_fails(doc, n, AG_ETOOBIG, err, sizeof err);
  assert_string_equal(err, "line 2, column 34: collections nested more than 64 deep (through the alias *a)");
}

static void test_yaml_documents(void **state) {
  (void)state;
  assert_yaml_json("", "{}");
  assert_yaml_json("# only a comment\n\n", "{}");
  assert_yaml_json("---\n", "{}");
  assert_yaml_json("--- ~\n", "null");
  assert_yaml_json("---\na: 1\n...\n", "{\"a\":1}");
  char err[256];
  yaml_fails("a: 1\n---\nb: 2\n", 14, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 1: a second document starts here; only one is read");
  /* NULL text with length 0 is the empty document. */
  ag_json *j = NULL;
  assert_int_equal(ag_yaml_to_json(NULL, 0, &j, err, sizeof err), 0);
  assert_dump(j, "{}");
  ag_json_free(j);
}

static void test_yaml_encoding(void **state) {
  (void)state;
  char err[256];
  yaml_fails("a: ok\nb: \xff\n", 11, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 2, column 4: invalid leading UTF-8 octet (#FF)");
  yaml_fails("a: caf\xc3(\n", 9, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 8: invalid trailing UTF-8 octet (#28)");
  yaml_fails("a: \x01\n", 5, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 4: control characters are not allowed (#1)");
  /* A NUL byte in the text is not YAML. */
  yaml_fails("a: b\0c\n", 7, AG_EINVAL, err, sizeof err);
  assert_string_equal(err, "line 1, column 5: control characters are not allowed (#0)");
  /* UTF-16 with a byte order mark is decoded. */
  const char utf16[] = "\xff\xfe"
                       "a\0:\0 \0\xe9\0\n\0";
  ag_json *j = NULL;
  assert_int_equal(ag_yaml_to_json(utf16, sizeof utf16 - 1, &j, err, sizeof err), 0);
  assert_dump(j, "{\"a\":\"\xc3\xa9\"}");
  ag_json_free(j);
}

static void test_yaml_input_cap(void **state) {
  (void)state;
  size_t n = AG_YAML_MAX_INPUT + 1;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, '#', n);
  char err[256];
  yaml_fails(big, n, AG_ETOOBIG, err, sizeof err);
  assert_non_null(strstr(err, "1048577 bytes"));
  /* Exactly the cap is read (a comment-only document). */
  ag_json *j = NULL;
  assert_int_equal(ag_yaml_to_json(big, n - 1, &j, err, sizeof err), 0);
  ag_json_free(j);
  free(big);
}

/* ------------------------------------------------------------------------------------------------
 * Conversion: the example installation */

static void check_v05_docs(const ag_json *docs, const ag_json *warnings) {
  /* house_agent: defined in config.yaml, everything from the global sections. */
  const ag_json *d = doc_named(docs, "house_agent");
  assert_string_equal(ag_json_get_str(d, "kind"), "sgr_tool_calling");
  assert_string_equal(ag_json_get_str(d, "stream_format"), "openai");
  assert_string_equal(ag_json_get_str(d, "description"), "Imported from sgr-agent-core (SGRToolCallingAgent)");
  assert_dump(ag_json_get(d, "llm"),
              "{\"model\":\"gpt-4o-mini\",\"temperature\":0.40000000000000002,\"max_tokens\":8000}");
  assert_dump(ag_json_get(d, "limits"), "{\"max_iterations\":10,\"max_clarifications\":3,\"max_searches\":4}");
  assert_dump(ag_json_get(d, "tools"), "[\"ReasoningTool\",\"FinalAnswerTool\"]");
  assert_dump(ag_json_get(d, "meta"), "{\"source\":\"sgr-agent-core\",\"base_class\":"
                                      "\"sgr_agent_core.agents.sgr_tool_calling_agent.SGRToolCallingAgent\"}");
  assert_prompt_file(d, "system", DATA "/prompts/system_prompt.txt");
  assert_prompt_file(d, "initial_request", DATA "/prompts/initial_user_request.txt");
  assert_prompt_file(d, "clarification_response", DATA "/prompts/clarification_response.txt");

  /* research_agent: overrides key by key; its own prompt files; the global clarification file. */
  d = doc_named(docs, "research_agent");
  assert_int_equal(ag_json_len(d), 9); /* name description kind stream_format prompts llm limits tools meta */
  assert_string_equal(ag_json_get_str(d, "kind"), "sgr");
  assert_string_equal(ag_json_get_str(d, "description"), "Imported from sgr-agent-core (ResearchSGRAgent)");
  assert_dump(ag_json_get(d, "llm"), "{\"model\":\"gpt-4o\",\"temperature\":0.29999999999999999,\"max_tokens\":16000}");
  assert_dump(ag_json_get(d, "limits"), "{\"max_iterations\":15,\"max_clarifications\":5,\"max_searches\":6}");
  assert_dump(ag_json_get(d, "tools"),
              "[\"WebSearchTool\",\"ExtractPageContentTool\",\"CreateReportTool\",\"ClarificationTool\","
              "\"GeneratePlanTool\",\"AdaptPlanTool\",\"FinalAnswerTool\"]");
  assert_dump(ag_json_get(d, "meta"),
              "{\"source\":\"sgr-agent-core\",\"base_class\":\"sgr_agent_core.agents.sgr_agent.ResearchSGRAgent\"}");
  assert_prompt_file(d, "system", DATA "/prompts/research_system.txt"); /* {{ }} kept as they are */
  assert_non_null(strstr(ag_json_get_str(ag_json_get(d, "prompts"), "system"), "{{\"title\": ..."));
  assert_prompt_file(d, "initial_request", DATA "/prompts/research_request.txt");
  assert_prompt_file(d, "clarification_response", DATA "/prompts/clarification_response.txt");
  assert_warning(warnings, "agent research_agent: llm.base_url is a server setting in agentd (OPENAI_BASE_URL); "
                           "not imported");
  assert_warning(warnings, "agent research_agent: search.max_results is not imported");
  assert_warning(warnings, "agent research_agent: execution.max_steps is not imported: agentd caps LLM calls "
                           "itself (limits.max_steps defaults to 2 * max_iterations + 4)");
  assert_warning(warnings, "agent research_agent: the MCP servers of mcp.mcpServers (deepwiki, local_fs) are not "
                           "imported with the agent; import them with POST /admin/mcp/import");

  /* quick_agent: minimal; everything but the tools comes from config.yaml. */
  d = doc_named(docs, "quick_agent");
  assert_string_equal(ag_json_get_str(d, "kind"), "tool_calling");
  assert_dump(ag_json_get(d, "llm"),
              "{\"model\":\"gpt-4o-mini\",\"temperature\":0.40000000000000002,\"max_tokens\":8000}");
  assert_dump(ag_json_get(d, "limits"), "{\"max_iterations\":10,\"max_clarifications\":3,\"max_searches\":4}");
  assert_dump(ag_json_get(d, "tools"), "[\"WebSearchTool\",\"FinalAnswerTool\"]");
  assert_prompt_file(d, "system", DATA "/prompts/system_prompt.txt");
  assert_false(has_warning(warnings, "agent quick_agent"));

  /* inline_agent: inline strings beat the global files; old variable names; a merged llm block. */
  d = doc_named(docs, "inline_agent");
  assert_string_equal(ag_json_get_str(d, "kind"), "sgr");
  assert_dump(ag_json_get(d, "llm"),
              "{\"model\":\"gpt-4o-mini\",\"temperature\":0.10000000000000001,\"max_tokens\":4000}");
  assert_dump(ag_json_get(d, "prompts"),
              "{\"system\":\"You are a helpful research assistant. Today is {current_date}.\\nTools: "
              "{available_tools}\\nAnswer in JSON like {{\\\"answer\\\": \\\"...\\\"}}.\\n\","
              "\"initial_request\":\"User request: {user_request}\\nPlease analyze and respond.\","
              "\"clarification_response\":\"I need clarification on: {clarifications}\"}");
  assert_false(has_warning(warnings, "agent inline_agent"));

  /* auto_agent: a variant, a display name, a description, an unknown key. */
  d = doc_named(docs, "auto_agent");
  assert_string_equal(ag_json_get_str(d, "kind"), "sgr_tool_calling");
  assert_string_equal(ag_json_get_str(d, "description"), "Decides for itself when to call tools.");
  assert_dump(ag_json_get(d, "limits"), "{\"max_iterations\":6,\"max_clarifications\":3,\"max_searches\":4}");
  assert_dump(ag_json_get(d, "meta"), "{\"display_name\":\"Auto Researcher\",\"source\":\"sgr-agent-core\","
                                      "\"base_class\":\"sgr_agent_core.agents.SGRAutoToolCallingResearchAgent\"}");
  assert_warning(warnings, "agent auto_agent: base_class \"sgr_agent_core.agents.SGRAutoToolCallingResearchAgent\" "
                           "runs as kind sgr_tool_calling");
  assert_warning(warnings, "agent auto_agent: unknown key \"streaming\"; not imported");

  /* The global settings are reported once, from the config file, and no secret is shown. */
  assert_warning(warnings, "config.yaml: llm.api_key is a server setting in agentd (OPENAI_API_KEY); not imported");
  assert_warning(warnings, "config.yaml: llm.base_url is a server setting in agentd (OPENAI_BASE_URL); not imported");
  assert_warning(warnings, "config.yaml: search.tavily_api_key is a server setting in agentd "
                           "(AGENTD_SEARCH_API_KEY); not imported");
  assert_warning(warnings, "config.yaml: search.tavily_api_base_url is not imported");
  assert_warning(warnings, "config.yaml: search.content_limit is not imported");
  assert_warning(warnings, "config.yaml: execution.mcp_context_limit has no per-agent equivalent in agentd");
  assert_warning(warnings, "config.yaml: execution.logs_dir is not imported");
  assert_warning(warnings, "config.yaml: execution.reports_dir is not imported");
  assert_warning(warnings, "config.yaml: the MCP servers of mcp.mcpServers (deepwiki)");
  assert_int_equal(count_warnings(warnings, "llm.api_key"), 1);
  assert_false(has_warning(warnings, "sk-test"));
  assert_false(has_warning(warnings, "tvly-test"));
  assert_warning(warnings, "agents.yaml: unknown key \"x-shared-llm\"; not imported");
  assert_false(has_warning(warnings, "search.max_searches"));
}

static void test_convert_files_v05(void **state) {
  (void)state;
  const char *paths[] = {DATA "/config.yaml", DATA "/agents.yaml"};
  ag_json *docs = NULL, *warnings = NULL;
  char err[512];
  int rc = ag_sgr_config_convert_files(paths, 2, &docs, &warnings, err, sizeof err);
  if (rc != 0) fail_msg("convert: %d %s", rc, err);
  assert_string_equal(err, "");
  assert_int_equal(ag_json_len(docs), 5);
  static const char *const order[] = {"house_agent", "research_agent", "quick_agent", "inline_agent", "auto_agent"};
  for (size_t i = 0; i < 5; i++)
    assert_string_equal(ag_json_get_str(ag_json_at(docs, i), "name"), order[i]);
  check_v05_docs(docs, warnings);
  assert_int_equal(ag_json_len(warnings), 17);
  ag_json_free(docs);
  ag_json_free(warnings);

  /* The agents file first: the global settings still come from config.yaml. */
  const char *swapped[] = {DATA "/agents.yaml", DATA "/config.yaml"};
  assert_int_equal(ag_sgr_config_convert_files(swapped, 2, &docs, &warnings, err, sizeof err), 0);
  assert_string_equal(ag_json_get_str(ag_json_at(docs, 0), "name"), "research_agent");
  assert_string_equal(ag_json_get_str(ag_json_at(docs, 4), "name"), "house_agent");
  check_v05_docs(docs, warnings);
  ag_json_free(docs);
  ag_json_free(warnings);
}

static void test_convert_legacy(void **state) {
  (void)state;
  const char *paths[] = {DATA "/legacy/config.yaml"};
  ag_json *docs = NULL, *warnings = NULL;
  char err[512];
  int rc = ag_sgr_config_convert_files(paths, 1, &docs, &warnings, err, sizeof err);
  if (rc != 0) fail_msg("convert: %d %s", rc, err);
  assert_int_equal(ag_json_len(docs), 2);
  const ag_json *d = ag_json_at(docs, 0);
  assert_dump(d, "{\"name\":\"legacy_researcher\",\"description\":\"SGR agent from the list format\","
                 "\"kind\":\"sgr\",\"stream_format\":\"openai\","
                 "\"prompts\":{\"system\":\"You are a legacy research agent. Ask when unclear: {clarifications}\\n\"},"
                 "\"llm\":{\"model\":\"gpt-4o\",\"temperature\":0.5,\"max_tokens\":6000},"
                 "\"limits\":{\"max_iterations\":8,\"max_clarifications\":2,\"max_searches\":3},"
                 "\"tools\":[\"WebSearchTool\",\"FinalAnswerTool\",\"ClarificationTool\"],"
                 "\"meta\":{\"display_name\":\"Legacy Researcher\",\"source\":\"sgr-agent-core\","
                 "\"base_class\":\"SGRResearchAgent\"}}");
  d = ag_json_at(docs, 1);
  assert_dump(d, "{\"name\":\"legacy_simple\",\"description\":\"Simple test agent\","
                 "\"kind\":\"sgr_tool_calling\",\"stream_format\":\"openai\","
                 "\"llm\":{\"model\":\"gpt-4o-mini\",\"temperature\":0.20000000000000001,\"max_tokens\":6000},"
                 "\"limits\":{\"max_iterations\":12},"
                 "\"tools\":[\"WebSearchTool\",\"FinalAnswerTool\"],"
                 "\"meta\":{\"display_name\":\"Legacy Simple\",\"source\":\"sgr-agent-core\","
                 "\"base_class\":\"SGRToolCallingResearchAgent\"}}");
  assert_int_equal(ag_json_len(warnings), 1);
  assert_warning(warnings, "legacy/config.yaml: openai.api_key is a server setting in agentd (OPENAI_API_KEY)");
  ag_json_free(docs);
  ag_json_free(warnings);
}

/* ------------------------------------------------------------------------------------------------
 * Conversion: single cases */

static void test_convert_base_classes(void **state) {
  (void)state;
  static const struct {
    const char *cls, *kind;
  } cases[] = {
      {"SGRAgent", "sgr"},
      {"sgr_agent_core.agents.ResearchSGRAgent", "sgr"},
      {"SGRResearchAgent", "sgr"},
      {"sgragent", "sgr"},
      {"ToolCallingAgent", "tool_calling"},
      {"x.y.ResearchToolCallingAgent", "tool_calling"},
      {"ToolCallingResearchAgent", "tool_calling"},
      {"SGRToolCallingAgent", "sgr_tool_calling"},
      {"ResearchSGRToolCallingAgent", "sgr_tool_calling"},
      {"SGRToolCallingResearchAgent", "sgr_tool_calling"},
      {"SGRAutoToolCallingResearchAgent", "sgr_tool_calling"},
      {"SGRSOToolCallingResearchAgent", "sgr_tool_calling"},
  };
  for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
    char yaml[256];
    snprintf(yaml, sizeof yaml, "agents:\n  a:\n    base_class: %s\n", cases[i].cls);
    ag_json *docs = NULL, *warnings = NULL;
    char err[512];
    assert_int_equal(convert_text(yaml, NULL, &docs, &warnings, err, sizeof err), 0);
    assert_string_equal(ag_json_get_str(ag_json_at(docs, 0), "kind"), cases[i].kind);
    assert_string_equal(ag_json_get_str(ag_json_get(ag_json_at(docs, 0), "meta"), "base_class"), cases[i].cls);
    /* No prompts, llm, limits or tools when nothing sets them. */
    assert_null(ag_json_get(ag_json_at(docs, 0), "prompts"));
    assert_null(ag_json_get(ag_json_at(docs, 0), "llm"));
    assert_null(ag_json_get(ag_json_at(docs, 0), "limits"));
    assert_null(ag_json_get(ag_json_at(docs, 0), "tools"));
    ag_json_free(docs);
    ag_json_free(warnings);
  }
}

static void test_convert_errors(void **state) {
  (void)state;
  convert_fails("agents:\n  custom:\n    base_class: my.pkg.BaseAgent\n", NULL, AG_EINVAL,
                (const char *[]){"agent custom: base_class \"my.pkg.BaseAgent\" has no agentd equivalent",
                                 "accepted: SGRAgent, ToolCallingAgent, SGRToolCallingAgent", NULL});
  convert_fails("agents:\n  custom:\n    tools: [A]\n", NULL, AG_EINVAL,
                (const char *[]){"agent custom: base_class is missing", "accepted:", NULL});
  convert_fails("agents:\n  empty:\n", NULL, AG_EINVAL,
                (const char *[]){"agent empty: has no settings (base_class is required)", NULL});
  convert_fails("agents:\n  a:\n    base_class: SGRAgent\n    prompts:\n      system_prompt_file: prompts/nope.txt\n",
                DATA, AG_ENOTFOUND,
                (const char *[]){"agent a: prompts.system_prompt_file: cannot read \"" DATA "/prompts/nope.txt\": No "
                                 "such file or directory",
                                 NULL});
  convert_fails("prompts:\n  clarification_response_file: gone.txt\nagents:\n  a:\n    base_class: SGRAgent\n", DATA,
                AG_ENOTFOUND,
                (const char *[]){"agent a: prompts.clarification_response_file (from the global prompts): cannot read",
                                 "gone.txt", NULL});
  convert_fails("agents:\n  a:\n    base_class: SGRAgent\n    prompts:\n      system_prompt_file: x.txt\n", NULL,
                AG_EINVAL,
                (const char *[]){"agent a: prompts.system_prompt_file: prompt files are not available here", NULL});
  convert_fails("agents:\n  - name: twin\n    base_class: SGRAgent\n  - name: twin\n    base_class: SGRAgent\n", NULL,
                AG_EEXIST, (const char *[]){"agent twin is defined twice", NULL});
  convert_fails("agents:\n  \"bad name!\":\n    base_class: SGRAgent\n", NULL, AG_EINVAL,
                (const char *[]){"agent \"bad name!\": the name must be 1 to 64 characters", NULL});
  convert_fails(
      "agents:\n  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:\n    base_class: SGRAgent\n", NULL,
      AG_EINVAL, (const char *[]){"the name must be 1 to 64 characters", NULL});
  convert_fails("agents:\n  - base_class: SGRAgent\n", NULL, AG_EINVAL,
                (const char *[]){"config: agents[0]: name is missing", NULL});
  convert_fails("agents:\n  - name: 7\n    base_class: SGRAgent\n", NULL, AG_EINVAL,
                (const char *[]){"config: agents[0]: name must be a string", NULL});
  convert_fails("agents: 5\n", NULL, AG_EINVAL, (const char *[]){"config: agents must be a mapping", NULL});
  convert_fails("llm: fast\nagents: {}\n", NULL, AG_EINVAL, (const char *[]){"config: llm must be a mapping", NULL});
  convert_fails("llm: {temperature: warm}\nagents:\n  a: {base_class: SGRAgent}\n", NULL, AG_EINVAL,
                (const char *[]){"config: llm.temperature must be a number", NULL});
  convert_fails("agents:\n  a: {base_class: SGRAgent, openai: {max_tokens: 0}}\n", NULL, AG_EINVAL,
                (const char *[]){"agent a: openai.max_tokens must be a positive integer", NULL});
  convert_fails("agents:\n  a: {base_class: SGRAgent, execution: {max_iterations: -1}}\n", NULL, AG_EINVAL,
                (const char *[]){"agent a: execution.max_iterations must be a non-negative integer", NULL});
  convert_fails("agents:\n  a: {base_class: SGRAgent, tools: [WebSearchTool, 3]}\n", NULL, AG_EINVAL,
                (const char *[]){"agent a: tools[1] must be a tool name", NULL});
  convert_fails("agents:\n  a: {base_class: SGRAgent, prompts: {system_prompt_str: [x]}}\n", NULL, AG_EINVAL,
                (const char *[]){"agent a: prompts.system_prompt_str must be a string", NULL});
  convert_fails("agents:\n  a: {base_class: SGRAgent, prompts: {initial_user_request_str: \"a\\0b\"}}\n", NULL,
                AG_EINVAL, (const char *[]){"agent a: prompts.initial_request contains a NUL character", NULL});
  convert_fails("[1]\n", NULL, AG_EINVAL, (const char *[]){"config: the YAML root must be a mapping", NULL});

  /* The same name in two files. */
  const char *paths[] = {DATA "/config.yaml", DATA "/config.yaml"};
  ag_json *docs = NULL, *warnings = NULL;
  char err[512];
  assert_int_equal(ag_sgr_config_convert_files(paths, 2, &docs, &warnings, err, sizeof err), AG_EEXIST);
  assert_string_equal(err, "agent house_agent is defined twice (agent names must be unique)");
  assert_null(docs);
  assert_null(warnings);
  /* A file that cannot be read or parsed is named. */
  const char *missing[] = {DATA "/nope.yaml"};
  assert_int_equal(ag_sgr_config_convert_files(missing, 1, &docs, &warnings, err, sizeof err), AG_ENOTFOUND);
  assert_string_equal(err, DATA "/nope.yaml: cannot read: No such file or directory");
  const char *prompt[] = {DATA "/prompts/system_prompt.txt"};
  assert_int_equal(ag_sgr_config_convert_files(prompt, 1, &docs, &warnings, err, sizeof err), AG_EINVAL);
  assert_non_null(strstr(err, DATA "/prompts/system_prompt.txt: line "));
  /* Files without agents. */
  char tmp[] = "/tmp/agentd_sgr_noagents_XXXXXX";
  int fd = mkstemp(tmp);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "llm: {model: x}\n", 16), 16);
  close(fd);
  const char *none[] = {tmp};
  assert_int_equal(ag_sgr_config_convert_files(none, 1, &docs, &warnings, err, sizeof err), AG_EINVAL);
  assert_non_null(strstr(err, "no agents found in /tmp/agentd_sgr_noagents_"));
  unlink(tmp);
  assert_int_equal(ag_sgr_config_convert_files(NULL, 0, &docs, &warnings, err, sizeof err), AG_EINVAL);
}

static void test_convert_overrides_and_prompts(void **state) {
  (void)state;
  ag_json *docs = NULL, *warnings = NULL;
  char err[512];
  /* A null agent value does not override; a string beats a file at the same level; the agent's file
   * beats the global string; unknown variables are kept and reported. */
  const char *yaml = "llm: {model: base-model, temperature: 1, proxy: ~}\n"
                     "prompts:\n  system_prompt: 'global {task}'\n  initial_user_request_str: 'global request'\n"
                     "agents:\n"
                     "  a:\n    base_class: SGRAgent\n    llm: {model: ~, temperature: 0}\n"
                     "    prompts:\n      system_prompt_str: 'Hi {user_request} {mystery} {{x}} {0} {a.b} }'\n"
                     "      system_prompt_file: prompts/system_prompt.txt\n"
                     "      initial_user_request_file: prompts/research_request.txt\n";
  assert_int_equal(convert_text(yaml, DATA, &docs, &warnings, err, sizeof err), 0);
  const ag_json *d = ag_json_at(docs, 0);
  assert_dump(ag_json_get(d, "llm"), "{\"model\":\"base-model\",\"temperature\":0.0}");
  assert_dump(ag_json_get(d, "prompts"), "{\"system\":\"Hi {user_request} {mystery} {{x}} {0} {a.b} }\","
                                         "\"initial_request\":\"Research task: {task}\\n\"}");
  assert_warning(warnings, "agent a: prompts.system_prompt_file is ignored: system_prompt_str is set");
  assert_warning(warnings, "agent a: prompts.system uses {mystery}, which agentd does not know");
  assert_false(has_warning(warnings, "proxy"));
  assert_int_equal(ag_json_len(warnings), 2);
  ag_json_free(docs);
  ag_json_free(warnings);

  /* Only max_searches is read from search; a stray max_iterations there does not hide the global one. */
  assert_int_equal(convert_text("execution: {max_iterations: 7}\nsearch: {max_searches: 2}\n"
                                "agents:\n  a: {base_class: SGRAgent, search: {max_iterations: 1}}\n",
                                NULL, &docs, &warnings, err, sizeof err),
                   0);
  assert_dump(ag_json_get(ag_json_at(docs, 0), "limits"), "{\"max_iterations\":7,\"max_searches\":2}");
  assert_warning(warnings, "agent a: search.max_iterations is not a known setting; not imported");
  ag_json_free(docs);
  ag_json_free(warnings);

  /* A separate agents root: its global sections are ignored with a warning. */
  ag_json *global = yaml_ok("llm: {model: g}\nsurprise: 1\n");
  ag_json *agents = yaml_ok("llm: {model: ignored}\nagents:\n  a: {base_class: ToolCallingAgent, openai: {}}\n");
  assert_int_equal(ag_sgr_config_convert(global, agents, NULL, &docs, &warnings, err, sizeof err), 0);
  assert_dump(ag_json_get(ag_json_at(docs, 0), "llm"), "{\"model\":\"g\"}");
  assert_warning(warnings, "config: unknown key \"surprise\"; not imported");
  assert_warning(warnings, "agents file: the llm section is ignored here (the global settings come from config)");
  ag_json_free(docs);
  ag_json_free(warnings);
  /* No global at all. */
  assert_int_equal(ag_sgr_config_convert(NULL, agents, NULL, &docs, &warnings, err, sizeof err), 0);
  assert_null(ag_json_get(ag_json_at(docs, 0), "llm"));
  assert_warning(warnings, "agents file: the llm section is ignored here (no global configuration was given)");
  ag_json_free(docs);
  ag_json_free(warnings);
  ag_json_free(global);
  ag_json_free(agents);

  /* No agents: not an error for the in-memory form. */
  assert_int_equal(convert_text("llm: {model: x}\n", NULL, &docs, &warnings, err, sizeof err), 0);
  assert_int_equal(ag_json_len(docs), 0);
  assert_warning(warnings, "no agents found");
  ag_json_free(docs);
  ag_json_free(warnings);
}

static void test_convert_prompt_file_limits(void **state) {
  (void)state;
  char dir[] = "/tmp/agentd_sgr_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/big.txt", dir);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (size_t i = 0; i <= AG_SGR_PROMPT_FILE_MAX; i++)
    fputc('x', f);
  fclose(f);
  char yaml[512];
  snprintf(yaml, sizeof yaml, "agents:\n  a:\n    base_class: SGRAgent\n    prompts: {system_prompt_file: %s}\n", path);
  convert_fails(yaml, "/nonexistent", AG_ETOOBIG, (const char *[]){"is larger than 256 KiB", NULL});
  /* Exactly the cap is fine; the absolute path ignores base_dir. */
  assert_int_equal(truncate(path, AG_SGR_PROMPT_FILE_MAX), 0);
  ag_json *docs = NULL, *warnings = NULL;
  char err[512];
  assert_int_equal(convert_text(yaml, "/nonexistent", &docs, &warnings, err, sizeof err), 0);
  assert_int_equal(ag_json_str_len(ag_json_get(ag_json_get(ag_json_at(docs, 0), "prompts"), "system")),
                   AG_SGR_PROMPT_FILE_MAX);
  ag_json_free(docs);
  ag_json_free(warnings);
  /* Not text. */
  f = fopen(path, "wb");
  assert_non_null(f);
  fputs("bad \xff byte", f);
  fclose(f);
  convert_fails(yaml, "/nonexistent", AG_EINVAL,
                (const char *[]){"agent a: prompts.system is not valid UTF-8 text", NULL});
  f = fopen(path, "wb");
  assert_non_null(f);
  fwrite("nul\0byte", 1, 8, f);
  fclose(f);
  convert_fails(yaml, "/nonexistent", AG_EINVAL, (const char *[]){"contains a NUL byte", NULL});
  /* A UTF-8 byte order mark is dropped. */
  f = fopen(path, "wb");
  assert_non_null(f);
  fputs("\xEF\xBB\xBFHello {task}", f);
  fclose(f);
  assert_int_equal(convert_text(yaml, "/nonexistent", &docs, &warnings, err, sizeof err), 0);
  assert_string_equal(ag_json_get_str(ag_json_get(ag_json_at(docs, 0), "prompts"), "system"), "Hello {task}");
  /* Without a base directory even an absolute prompt path is refused. */
  convert_fails(yaml, NULL, AG_EINVAL, (const char *[]){"prompt files are not available here", NULL});
  ag_json_free(docs);
  ag_json_free(warnings);
  unlink(path);
  rmdir(dir);
}

static void test_convert_warning_cap(void **state) {
  (void)state;
  /* Many unknown keys: the warnings stop at the cap, with a last one saying so. */
  const size_t cap = 64 * 1024;
  char *yaml = malloc(cap);
  assert_non_null(yaml);
  size_t n = (size_t)snprintf(yaml, cap, "agents:\n  a:\n    base_class: SGRAgent\n");
  for (int i = 0; i < 500 && n < cap; i++)
    n += (size_t)snprintf(yaml + n, cap - n, "    k%d: 1\n", i);
  ag_json *docs = NULL, *warnings = NULL;
  char err[256];
  assert_int_equal(convert_text(yaml, NULL, &docs, &warnings, err, sizeof err), 0);
  assert_int_equal(ag_json_len(warnings), AG_SGR_MAX_WARNINGS + 1);
  assert_string_equal(ag_json_str(ag_json_at(warnings, AG_SGR_MAX_WARNINGS)), "(more warnings not shown)");
  ag_json_free(docs);
  ag_json_free(warnings);
  free(yaml);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_yaml_scalars),
      cmocka_unit_test(test_yaml_nesting),
      cmocka_unit_test(test_yaml_errors),
      cmocka_unit_test(test_yaml_duplicate_keys),
      cmocka_unit_test(test_yaml_aliases),
      cmocka_unit_test(test_yaml_billion_laughs),
      cmocka_unit_test(test_yaml_depth),
      cmocka_unit_test(test_yaml_documents),
      cmocka_unit_test(test_yaml_encoding),
      cmocka_unit_test(test_yaml_input_cap),
      cmocka_unit_test(test_convert_files_v05),
      cmocka_unit_test(test_convert_legacy),
      cmocka_unit_test(test_convert_base_classes),
      cmocka_unit_test(test_convert_errors),
      cmocka_unit_test(test_convert_overrides_and_prompts),
      cmocka_unit_test(test_convert_prompt_file_limits),
      cmocka_unit_test(test_convert_warning_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
