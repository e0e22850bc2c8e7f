/* Workflow graphs: compile errors that name the field, the engineering loop (architect ->
 * developer -> tester with a bounded retry edge), max_visits and max_transitions, every output
 * conversion, merge and set, every condition operator, rendering, checkpoints and escalation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent/workflow.h"
#include "base/json.h"

/* Test JSON is written with ' for " (C escapes would hide its structure). */
static char *dq(const char *s) {
  char *d = strdup(s);
  assert_non_null(d);
  for (char *p = d; *p; p++)
    if (*p == '\'') *p = '"';
  return d;
}

static ag_json *parse_q(const char *q) {
  char *s = dq(q);
  ag_json *j = ag_json_parse(s, strlen(s), NULL, 0);
  if (!j) fail_msg("test JSON does not parse: %s", s);
  free(s);
  return j;
}

static ag_workflow *compile_ok(const char *q) {
  ag_json *j = parse_q(q);
  ag_workflow *wf = NULL;
  char err[512] = "";
  if (ag_workflow_compile(j, &wf, err, sizeof err) < 0) fail_msg("compile: %s\n%s", err, q);
  ag_json_free(j);
  return wf;
}

static void compile_fails(const char *q, const char *want) {
  ag_json *j = parse_q(q);
  ag_workflow *wf = (ag_workflow *)(uintptr_t)1; /* must be reset to NULL */
  char err[512] = "";
  assert_int_equal(ag_workflow_compile(j, &wf, err, sizeof err), AG_EINVAL);
  assert_null(wf);
  if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'\n%s", err, want, q);
  ag_json_free(j);
}

static int node_of(const ag_workflow *wf, const char *name) {
  int i = ag_workflow_find(wf, name);
  if (i == -2) fail_msg("no node %s", name);
  return i;
}

static const char *at(const ag_workflow *wf, const ag_wf_run *r) {
  return r->node == AG_WF_END ? "end" : ag_workflow_node(wf, r->node)->name;
}

/* The node `name` finishes with `text` (quotes written as '). */
static void done_q(const ag_workflow *wf, ag_wf_run *r, const char *name, const char *text_q) {
  char err[512] = "";
  char *text = text_q ? dq(text_q) : NULL;
  r->node = node_of(wf, name);
  if (ag_wf_node_done(wf, r, "the task", text, err, sizeof err) < 0) fail_msg("node %s: %s", name, err);
  free(text);
}

/* The same with the text as it is (no quote swapping). */
static void done_raw(const ag_workflow *wf, ag_wf_run *r, const char *name, const char *text) {
  char err[512] = "";
  r->node = node_of(wf, name);
  if (ag_wf_node_done(wf, r, "the task", text, err, sizeof err) < 0) fail_msg("node %s: %s", name, err);
}

/* The node fails with `text`: the error mentions `want`, and the run is exactly as it was. */
static void done_fails(const ag_workflow *wf, ag_wf_run *r, const char *name, const char *text, const char *want) {
  char err[512] = "";
  r->node = node_of(wf, name);
  char *before = ag_wf_run_dump(wf, r);
  assert_int_equal(ag_wf_node_done(wf, r, "the task", text, err, sizeof err), AG_EINVAL);
  if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
  char *after = ag_wf_run_dump(wf, r);
  assert_string_equal(before, after);
  free(before);
  free(after);
}

static const ag_json *st(const ag_wf_run *r, const char *key) { return ag_json_get(r->state, key); }

static void assert_state_q(const ag_wf_run *r, const char *key, const char *want_q) {
  ag_json *want = parse_q(want_q);
  if (!ag_json_equal(st(r, key), want)) {
    char *have = ag_json_dumps(st(r, key));
    fail_msg("state.%s is %s, want %s", key, have ? have : "(absent)", want_q);
  }
  ag_json_free(want);
}

static void set_state_q(ag_wf_run *r, const char *key, const char *value_q) {
  assert_int_equal(ag_json_set_take(r->state, key, parse_q(value_q)), 0);
}

/* ---------- compiling ---------- */

static void test_compile_errors(void **state) {
  (void)state;
  /* One good node and an edge, to break one thing at a time. */
  compile_fails("[]", "workflow must be an object");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'entyr':'a'}", "workflow: 'entyr' is not a field here");
  compile_fails("{'nodes':{'a':{'agent':'x','tool':'y'}}}",
                "workflow.nodes.a: a node is of one kind, not both 'agent' and 'tool'");
  compile_fails("{'nodes':{'a':{'input':'x'}}}",
                "workflow.nodes.a: a node has one of agent, workflow, tool, human, builtin");
  compile_fails("{'nodes':{'a':{'agent':'x','args':{}}}}", "workflow.nodes.a: 'args' is not a field here");
  compile_fails("{'nodes':{'a':{'human':'ok?','input':'x'}}}", "workflow.nodes.a: 'input' is not a field here");
  compile_fails("{'nodes':{'a':{'builtin':'loop'}}}", "workflow.nodes.a.builtin: condition, merge or set");
  compile_fails("{'nodes':{'a':{'agent':'no spaces'}}}", "workflow.nodes.a.agent: a template name");
  compile_fails("{'nodes':{'a b':{'agent':'x'}}}", "workflow.nodes.a b: a node name is 1 to 64");
  compile_fails("{'nodes':{'end':{'agent':'x'}}}", "workflow.nodes.end: \"end\" is reserved");
  compile_fails("{'nodes':{'test':{'agent':'x'},'dev':{'agent':'y'}},'entry':'dev',"
                "'edges':[{'from':'dev','to':'test'},{'from':'test','to':'tset'}]}",
                "workflow.edges[1].to: no node 'tset'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'end','to':'a'}]}",
                "workflow.edges[0].from: no edge leaves 'end'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','colour':1}]}",
                "workflow.edges[0]: 'colour' is not a field here");
  compile_fails("{'nodes':{'a':{'agent':'x'},'b':{'agent':'y'},'c':{'agent':'z'}},'entry':'a',"
                "'edges':[{'from':'a','to':'c'},{'from':'b','to':'c'}]}",
                "workflow.nodes.b: unreachable (no edge leads to it from the entry 'a')");
  compile_fails("{'nodes':{'a':{'agent':'x'},'b':{'agent':'y'}},'edges':[{'from':'a','to':'b'}]}",
                "workflow.entry: required");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'entry':'b'}", "workflow.entry: no node 'b'");
  compile_fails("{'state':{'passed':'boolean'},'nodes':{'tester':{'agent':'t','output':{'pased':'passed'}}}}",
                "workflow.nodes.tester.output.pased: no state key 'pased'");
  compile_fails("{'nodes':{'a':{'agent':'x','output':'plan'}}}", "workflow.nodes.a.output: no state key 'plan'");
  compile_fails("{'state':{'passed':'boolean'},'nodes':{'a':{'agent':'x'}},"
                "'edges':[{'from':'a','to':'end','when':{'state.pased':true}}]}",
                "workflow.edges[0].when.state.pased: no state key 'pased'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'all':[{'passed':true}]}}]}",
                "workflow.edges[0].when.all[0].passed: unknown variable 'passed'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'visits.b':1}}]}",
                "workflow.edges[0].when.visits.b: no node 'b'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'output':{'~':1}}}]}",
                "workflow.edges[0].when.output: an operator object holds one of");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'output':{'in':'x'}}}]}",
                "workflow.edges[0].when.output.in: \"in\" takes an array");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'transitions':{'<':[1]}}}]}",
                "workflow.edges[0].when.transitions.<: orders compare with a number or a string");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'any':[]}}]}",
                "workflow.edges[0].when.any: a non-empty array");
  compile_fails("{'state':{'plan':'string'},'nodes':{'a':{'agent':'x','input':'Do {state.plan} with {x}'}}}",
                "workflow.nodes.a.input: unknown variable {x}");
  compile_fails("{'state':{'plan':'string'},'nodes':{'a':{'agent':'x','input':'Do {state.plna}'}}}",
                "workflow.nodes.a.input: no state key 'plna'");
  compile_fails("{'nodes':{'a':{'human':'Ship {state.code}?'}}}", "workflow.nodes.a.human: no state key 'code'");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'answer':'{result}'}", "workflow.answer: unknown variable {result}");
  compile_fails("{'nodes':{'a':{'tool':'web_search','args':{'q':['{state.q}']}}}}",
                "workflow.nodes.a.args.q[0]: no state key 'q'");
  compile_fails("{'state':{'plan':'text'},'nodes':{'a':{'agent':'x'}}}", "workflow.state.plan: unknown type 'text'");
  compile_fails("{'state':{'n':{'type':'integer','default':1.5}},'nodes':{'a':{'agent':'x'}}}",
                "workflow.state.n.default must be an integer");
  compile_fails("{'state':{'n':{'type':'integer','dflt':1}},'nodes':{'a':{'agent':'x'}}}",
                "workflow.state.n: 'dflt' is not a field here");
  compile_fails("{'nodes':{'h':{'human':'ok?','on_timeout':'end'}}}", "workflow.nodes.h.on_timeout needs timeout_s");
  compile_fails("{'nodes':{'h':{'human':'ok?','timeout_s':60,'on_timeout':'boss'}}}",
                "workflow.nodes.h.on_timeout: no node 'boss'");
  compile_fails("{'nodes':{'h':{'human':'ok?','timeout_s':0}}}",
                "workflow.nodes.h.timeout_s must be an integer from 1");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'a','max_iterations':0}]}",
                "workflow.edges[0].max_iterations must be an integer from 1 to 1000");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'a','max_iterations':1001}]}",
                "workflow.edges[0].max_iterations must be an integer from 1 to 1000");
  compile_fails("{'nodes':{'a':{'agent':'x'}},'max_transitions':1001}", "workflow.max_transitions must be an integer");
  compile_fails("{'state':{'n':'number','s':'string'},'nodes':{'m':{'builtin':'merge','inputs':['s'],'output':'n'}}}",
                "workflow.nodes.m.output: a merge makes a string, an object or an array, and 'n' holds a number");
  compile_fails(
      "{'state':{'o':'object','s':'string'},'nodes':{'m':{'builtin':'merge','inputs':['o','s'],'output':'o'}}}",
      "workflow.nodes.m.inputs[1]: 's' holds a string, and the merge into 'o' takes an object");
  compile_fails("{'state':{'s':'string'},'nodes':{'m':{'builtin':'merge','inputs':['s','t'],'output':'s'}}}",
                "workflow.nodes.m.inputs[1]: no state key 't'");
  compile_fails("{'state':{'s':'string'},'nodes':{'z':{'builtin':'set','values':{'verdikt':''}}}}",
                "workflow.nodes.z.values.verdikt: no state key 'verdikt'");
  compile_fails("{'state':{'passed':'boolean'},'nodes':{'z':{'builtin':'set','values':{'passed':'yes'}}}}",
                "workflow.nodes.z.values.passed: 'passed' holds a boolean, and this value is a string");
  compile_fails(
      "{'state':{'passed':'boolean','n':'number'},'nodes':{'z':{'builtin':'set','values':{'passed':'{state.n}'}}}}",
      "'passed' holds a boolean, and this value is a number");
  compile_fails("{'state':{'n':'integer'},'nodes':{'z':{'builtin':'set','values':{'n':[1]}}}}",
                "workflow.nodes.z.values.n: 'n' holds an integer");
  /* 17 nested levels. */
  char deep[2048];
  size_t off =
      (size_t)snprintf(deep, sizeof deep, "{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':");
  for (int i = 0; i < 17; i++)
    off += (size_t)snprintf(deep + off, sizeof deep - off, "{'not':");
  off += (size_t)snprintf(deep + off, sizeof deep - off, "{'transitions':1}");
  for (int i = 0; i < 17; i++)
    off += (size_t)snprintf(deep + off, sizeof deep - off, "}");
  snprintf(deep + off, sizeof deep - off, "}]}");
  compile_fails(deep, "conditions nest deeper than 16");
  /* 65 conditions in one edge (depth 1). */
  off = (size_t)snprintf(deep, sizeof deep,
                         "{'nodes':{'a':{'agent':'x'}},'edges':[{'from':'a','to':'end','when':{'any':[");
  for (int i = 0; i < 64; i++)
    off += (size_t)snprintf(deep + off, sizeof deep - off, "%s{'transitions':%d}", i ? "," : "", i);
  snprintf(deep + off, sizeof deep - off, "]}}]}");
  compile_fails(deep, "more than 64 conditions in one edge");
}

static const char *ENGINEERING =
    "{'state':{'plan':'string','code':'string','passed':'boolean','report':{'type':'string','default':'none yet'}},"
    " 'entry':'architect','answer':'{state.code}',"
    " 'nodes':{"
    "  'architect':{'agent':'architect','input':'Plan this: {task}','output':'plan'},"
    "  'developer':{'agent':'developer','input':'Plan: {state.plan}; report: {state.report}','output':'code'},"
    "  'tester':{'agent':'tester','input':'{state.code}','output':{'passed':'passed','report':'verdict'}}},"
    " 'edges':["
    "  {'from':'architect','to':'developer'},"
    "  {'from':'developer','to':'tester'},"
    "  {'from':'tester','to':'end','when':{'state.passed':true}},"
    "  {'from':'tester','to':'developer','max_iterations':2},"
    "  {'from':'tester','to':'end'}]}";

static void test_compile_graph(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(
      "{'state':{'plan':'string','code':'string','passed':'boolean','report':'string','found':'any','approval':'string'"
      ","
      "          'deployment':'object','verdict':{'type':'string','default':''}},"
      " 'entry':'architect','max_transitions':50,"
      " 'nodes':{"
      "  'architect':{'agent':'architect','input':'Plan this: {task}','output':'plan'},"
      "  'developer':{'agent':'coder.v2'},"
      "  "
      "'tester':{'agent':'tester','input':'{state.code}','output':{'passed':'passed','verdict':'report'},'max_visits':"
      "3},"
      "  'deploy':{'workflow':'devops','input':'{state.code}','output':'deployment'},"
      "  'lookup':{'tool':'web_search','args':{'query':'{task}'},'output':'found'},"
      "  'approve':{'human':'Ship {state.plan}?','output':'approval','timeout_s':3600,'on_timeout':'escalate'},"
      "  'escalate':{'agent':'architect'},"
      "  'check':{'builtin':'condition'},"
      "  'report':{'builtin':'merge','inputs':['plan','code'],'output':'report'},"
      "  'reset':{'builtin':'set','values':{'verdict':''}}},"
      " 'edges':["
      "  {'from':'architect','to':'lookup'},{'from':'lookup','to':'developer'},{'from':'developer','to':'tester'},"
      "  {'from':'tester','to':'check'},{'from':'check','to':'approve','when':{'state.passed':true}},"
      "  {'from':'check','to':'reset'},{'from':'reset','to':'developer'},"
      "  {'from':'approve','to':'deploy'},{'from':'deploy','to':'report'}]}");
  assert_int_equal(ag_workflow_n_nodes(wf), 10);
  assert_int_equal(ag_workflow_entry(wf), 0);
  assert_int_equal(ag_workflow_max_transitions(wf), 50);
  assert_int_equal(ag_workflow_find(wf, "end"), AG_WF_END);
  assert_int_equal(ag_workflow_find(wf, "nobody"), -2);
  assert_null(ag_workflow_node(wf, 10));
  assert_null(ag_workflow_node(wf, -1));
  static const int kinds[] = {AG_WF_AGENT, AG_WF_AGENT, AG_WF_AGENT,     AG_WF_SUBGRAPH, AG_WF_TOOL,
                              AG_WF_HUMAN, AG_WF_AGENT, AG_WF_CONDITION, AG_WF_MERGE,    AG_WF_SET};
  static const char *const kind_names[] = {"agent", "agent", "agent",     "workflow", "tool",
                                           "human", "agent", "condition", "merge",    "set"};
  for (int i = 0; i < 10; i++) {
    assert_int_equal(ag_workflow_node(wf, i)->kind, kinds[i]);
    assert_string_equal(ag_wf_node_kind_name(kinds[i]), kind_names[i]);
  }
  const ag_wf_node *t = ag_workflow_node(wf, node_of(wf, "tester"));
  assert_string_equal(t->target, "tester");
  assert_string_equal(t->input, "{state.code}");
  assert_int_equal(t->n_outputs, 2);
  assert_string_equal(t->outputs[0].field, "passed");
  assert_string_equal(t->outputs[1].field, "report");
  assert_int_equal(t->outputs[0].key, 2); /* passed */
  assert_int_equal(t->outputs[1].key, 7); /* verdict */
  assert_int_equal(t->max_visits, 3);
  assert_int_equal(t->on_timeout, -2);
  const ag_wf_node *a = ag_workflow_node(wf, node_of(wf, "approve"));
  assert_string_equal(a->input, "Ship {state.plan}?");
  assert_null(a->target);
  assert_int_equal(a->timeout_s, 3600);
  assert_int_equal(a->on_timeout, node_of(wf, "escalate"));
  const ag_wf_node *m = ag_workflow_node(wf, node_of(wf, "report"));
  assert_int_equal(m->n_inputs, 2);
  assert_int_equal(m->inputs[0], 0);
  assert_int_equal(m->inputs[1], 1);
  assert_null(ag_workflow_node(wf, node_of(wf, "architect"))->outputs[0].field);
  assert_non_null(ag_workflow_node(wf, node_of(wf, "lookup"))->args);
  assert_null(ag_workflow_node(wf, node_of(wf, "developer"))->args);
  assert_non_null(ag_workflow_node(wf, node_of(wf, "reset"))->values);
  /* Distinct targets in node order: architect twice, coder.v2, tester, devops. */
  const char *names[8];
  assert_int_equal(ag_workflow_targets(wf, names, 8), 4);
  assert_string_equal(names[0], "architect");
  assert_string_equal(names[1], "coder.v2");
  assert_string_equal(names[2], "tester");
  assert_string_equal(names[3], "devops");
  assert_int_equal(ag_workflow_targets(wf, names, 2), 2);

  /* The text compiles again to the same graph. */
  const char *text = ag_workflow_text(wf);
  ag_json *j = ag_json_parse(text, strlen(text), NULL, 0);
  assert_non_null(j);
  ag_workflow *wf2 = NULL;
  char err[256];
  assert_int_equal(ag_workflow_compile(j, &wf2, err, sizeof err), 0);
  ag_json_free(j);
  assert_string_equal(ag_workflow_text(wf2), text);
  assert_int_equal(ag_workflow_n_nodes(wf2), ag_workflow_n_nodes(wf));
  assert_int_equal(ag_workflow_entry(wf2), ag_workflow_entry(wf));
  assert_int_equal(ag_workflow_max_transitions(wf2), 50);
  for (int i = 0; i < 10; i++) {
    const ag_wf_node *x = ag_workflow_node(wf, i), *y = ag_workflow_node(wf2, i);
    assert_string_equal(x->name, y->name);
    assert_int_equal(x->kind, y->kind);
    assert_int_equal(x->n_outputs, y->n_outputs);
    assert_int_equal(x->max_visits, y->max_visits);
    assert_int_equal(x->on_timeout, y->on_timeout);
  }
  /* The same edges: fresh runs of both dump alike. */
  ag_wf_run r1, r2;
  assert_int_equal(ag_wf_run_init(wf, &r1), 0);
  assert_int_equal(ag_wf_run_init(wf2, &r2), 0);
  char *d1 = ag_wf_run_dump(wf, &r1), *d2 = ag_wf_run_dump(wf2, &r2);
  assert_string_equal(d1, d2);
  assert_non_null(strstr(d1, "\"edges\":[0,0,0,0,0,0,0,0,0]"));
  assert_non_null(strstr(d1, "\"verdict\":\"\""));
  assert_non_null(strstr(d1, "\"found\":null"));
  free(d1);
  free(d2);
  ag_wf_run_deinit(&r1);
  ag_wf_run_deinit(&r2);
  ag_workflow_free(wf2);
  ag_workflow_free(wf);

  /* One node: the entry may be left out; max_transitions defaults to 100. */
  wf = compile_ok("{'nodes':{'only':{'agent':'x'}}}");
  assert_int_equal(ag_workflow_entry(wf), 0);
  assert_int_equal(ag_workflow_max_transitions(wf), AG_WF_DEFAULT_TRANSITIONS);
  ag_workflow_free(wf);
}

/* ---------- moving ---------- */

/* Runs the engineering loop; the tester passes on its `pass_at`th run (0: never). Returns how
 * many times the developer ran. */
static int engineering_run(int pass_at, ag_wf_run *keep) {
  ag_workflow *wf = compile_ok(ENGINEERING);
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  assert_string_equal(at(wf, &r), "architect");
  int dev = 0, tests = 0;
  char err[256];
  for (int guard = 0; r.node != AG_WF_END && guard < 50; guard++) {
    const ag_wf_node *n = ag_workflow_node(wf, r.node);
    char text[256];
    char *input = ag_wf_render(n->input, "build a parser", &r);
    assert_non_null(input);
    if (strcmp(n->name, "architect") == 0) {
      assert_string_equal(input, "Plan this: build a parser");
      snprintf(text, sizeof text, "the plan");
    } else if (strcmp(n->name, "developer") == 0) {
      /* It sees the plan and the tester's last report. */
      char want[128];
      snprintf(want, sizeof want, "Plan: the plan; report: %s", dev == 0 ? "none yet" : "tests fail");
      assert_string_equal(input, want);
      snprintf(text, sizeof text, "code v%d", ++dev);
    } else {
      char want[32];
      snprintf(want, sizeof want, "code v%d", dev);
      assert_string_equal(input, want);
      tests++;
      snprintf(text, sizeof text, "{\"passed\": %s, \"verdict\": \"%s\"}", tests == pass_at ? "true" : "false",
               tests == pass_at ? "fine" : "tests fail");
    }
    free(input);
    if (ag_wf_node_done(wf, &r, "build a parser", text, err, sizeof err) < 0) fail_msg("%s", err);
    assert_string_equal(r.last_output, text);
    if (ag_wf_advance(wf, &r, err, sizeof err) < 0) fail_msg("%s", err);
  }
  assert_int_equal(r.node, AG_WF_END);
  char *answer = ag_wf_answer(wf, &r, "build a parser");
  char want[32];
  snprintf(want, sizeof want, "code v%d", dev);
  assert_string_equal(answer, want);
  free(answer);
  assert_int_equal(r.visits[node_of(wf, "tester")], tests);
  assert_int_equal(r.transitions, 1 + 2 * dev);
  *keep = r;
  ag_workflow_free(wf);
  return dev;
}

static void test_engineering_loop(void **state) {
  (void)state;
  ag_wf_run r;
  /* Never passing: the developer runs once, then twice more along the retry edge, and the last
   * edge ends the run. */
  assert_int_equal(engineering_run(0, &r), 3);
  assert_false(ag_json_bool(st(&r, "passed")));
  assert_int_equal(r.edge_uses[0], 1);
  assert_int_equal(r.edge_uses[1], 3);
  assert_int_equal(r.edge_uses[2], 0);
  assert_int_equal(r.edge_uses[3], 2);
  assert_int_equal(r.edge_uses[4], 1);
  ag_wf_run_deinit(&r);
  /* Passing at the second test: two developer runs, out along the `when` edge. */
  assert_int_equal(engineering_run(2, &r), 2);
  assert_true(ag_json_bool(st(&r, "passed")));
  assert_string_equal(ag_json_str(st(&r, "report")), "fine");
  assert_int_equal(r.edge_uses[2], 1);
  assert_int_equal(r.edge_uses[3], 1);
  assert_int_equal(r.edge_uses[4], 0);
  ag_wf_run_deinit(&r);
  assert_int_equal(engineering_run(1, &r), 1);
  ag_wf_run_deinit(&r);
}

static void test_max_visits_and_no_edge(void **state) {
  (void)state;
  ag_workflow *wf =
      compile_ok("{'entry':'a','nodes':{'a':{'agent':'x'},'b':{'agent':'y','max_visits':1},'c':{'agent':'z'}},"
                 "'edges':[{'from':'a','to':'b'},{'from':'b','to':'a'},{'from':'a','to':'c'}]}");
  ag_wf_run r;
  char err[256];
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  done_q(wf, &r, "a", "one");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_string_equal(at(wf, &r), "b");
  done_q(wf, &r, "b", "two");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_string_equal(at(wf, &r), "a");
  done_q(wf, &r, "a", "three");
  /* b ran its one visit: the edge into it is passed over. */
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_string_equal(at(wf, &r), "c");
  assert_int_equal(r.edge_uses[0], 1);
  assert_int_equal(r.edge_uses[2], 1);
  done_q(wf, &r, "c", "four");
  /* No edge leaves c: the run ends; advancing at the end stays there. */
  r.waiting = true;
  r.deadline = 99;
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_int_equal(r.node, AG_WF_END);
  assert_false(r.waiting);
  assert_int_equal(r.deadline, 0);
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_int_equal(r.node, AG_WF_END);
  /* A run that is over takes no output. */
  assert_int_equal(ag_wf_node_done(wf, &r, "t", "x", err, sizeof err), AG_EINVAL);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);

  /* Edges leave the node but none applies: an error naming it. */
  wf = compile_ok("{'state':{'ok':'boolean'},'nodes':{'a':{'agent':'x','output':'ok'}},"
                  "'edges':[{'from':'a','to':'end','when':{'state.ok':true}}]}");
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  done_q(wf, &r, "a", "no");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), AG_ENOTFOUND);
  assert_non_null(strstr(err, "node a: none of the 1 edges leaving it applies"));
  assert_string_equal(at(wf, &r), "a");
  done_q(wf, &r, "a", "yes");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_int_equal(r.node, AG_WF_END);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

static void test_max_transitions(void **state) {
  (void)state;
  ag_workflow *wf =
      compile_ok("{'state':{'stop':'boolean'},'max_transitions':3,'nodes':{'a':{'agent':'x','output':'stop'}},"
                 "'edges':[{'from':'a','to':'end','when':{'state.stop':true}},{'from':'a','to':'a'}]}");
  ag_wf_run r;
  char err[256];
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  for (int i = 0; i < 2; i++) {
    done_q(wf, &r, "a", "no");
    assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
    assert_string_equal(at(wf, &r), "a");
  }
  done_q(wf, &r, "a", "no");
  assert_int_equal(r.transitions, 3);
  char *before = ag_wf_run_dump(wf, &r);
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), AG_ELIMIT);
  assert_string_equal(err, "the workflow made its max_transitions (3) node runs");
  char *after = ag_wf_run_dump(wf, &r);
  assert_string_equal(before, after); /* unchanged */
  assert_int_equal(r.edge_uses[1], 2);
  free(before);
  free(after);
  /* The cap stops going on, not ending. */
  set_state_q(&r, "stop", "true");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_int_equal(r.node, AG_WF_END);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

/* ---------- outputs ---------- */

static const char *OUTPUTS =
    "{'state':{'s':'string','n':'number','i':'integer','b':'boolean','o':'object','a':'array','x':'any',"
    "          'passed':'boolean','report':'string','score':'number'},"
    " 'entry':'hub','nodes':{'hub':{'builtin':'condition'},"
    "  'ns':{'agent':'w','output':'s'},'nn':{'agent':'w','output':'n'},'ni':{'agent':'w','output':'i'},"
    "  'nb':{'agent':'w','output':'b'},'no':{'agent':'w','output':'o'},'na':{'agent':'w','output':'a'},"
    "  'nx':{'agent':'w','output':'x'},'nq':{'human':'Sure?'},"
    "  'nf':{'agent':'w','output':{'report':'report','passed':'passed','score':'score'}}},"
    " 'edges':[{'from':'hub','to':'ns'},{'from':'hub','to':'nn'},{'from':'hub','to':'ni'},{'from':'hub','to':'nb'},"
    "  {'from':'hub','to':'no'},{'from':'hub','to':'na'},{'from':'hub','to':'nx'},{'from':'hub','to':'nf'},"
    "  {'from':'hub','to':'nq'}]}";

static void test_outputs(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(OUTPUTS);
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  /* string: as it is. */
  done_raw(wf, &r, "ns", "  hello\n");
  assert_string_equal(ag_json_str(st(&r, "s")), "  hello\n");
  assert_string_equal(r.last_output, "  hello\n");
  assert_int_equal(r.visits[node_of(wf, "ns")], 1);
  assert_int_equal(r.transitions, 1);
  /* number */
  done_raw(wf, &r, "nn", " 3.5 ");
  assert_state_q(&r, "n", "3.5");
  done_raw(wf, &r, "nn", "42");
  assert_state_q(&r, "n", "42");
  assert_true(ag_json_is(st(&r, "n"), AG_JSON_INT));
  done_raw(wf, &r, "nn", "-1e3");
  assert_state_q(&r, "n", "-1000.0");
  done_fails(wf, &r, "nn", "abc", "node nn: output 'n' must be a number, got \"abc\"");
  done_fails(wf, &r, "nn", "0x10", "must be a number");
  done_fails(wf, &r, "nn", "1e999", "must be a number");
  done_fails(wf, &r, "nn", "inf", "must be a number");
  done_fails(wf, &r, "nn", "42 apples", "must be a number");
  done_fails(wf, &r, "nn", "", "must be a number");
  /* integer */
  done_raw(wf, &r, "ni", "7");
  assert_state_q(&r, "i", "7");
  done_raw(wf, &r, "ni", " 8.0\n");
  assert_state_q(&r, "i", "8");
  assert_true(ag_json_is(st(&r, "i"), AG_JSON_INT));
  done_fails(wf, &r, "ni", "7.5", "node ni: output 'i' must be an integer, got \"7.5\"");
  /* boolean */
  done_raw(wf, &r, "nb", " YES ");
  assert_state_q(&r, "b", "true");
  done_raw(wf, &r, "nb", "False");
  assert_state_q(&r, "b", "false");
  done_raw(wf, &r, "nb", "true");
  done_raw(wf, &r, "nb", "no");
  assert_state_q(&r, "b", "false");
  done_fails(wf, &r, "nb", "maybe", "node nb: output 'b' must be a boolean, got \"maybe\"");
  /* object: the text, a ```json fence (even after another fence), or the braces inside prose. */
  done_q(wf, &r, "no", "{'k':1}");
  assert_state_q(&r, "o", "{'k':1}");
  done_q(wf, &r, "no", "Here it is:\n```json\n{'k': 2}\n```\nThanks!");
  assert_state_q(&r, "o", "{'k':2}");
  done_q(wf, &r, "no", "First:\n```python\nprint({})\n```\nthen\n```JSON\n{'k': 3}\n```");
  assert_state_q(&r, "o", "{'k':3}");
  done_q(wf, &r, "no", "```\n{'k': 4}\n```");
  assert_state_q(&r, "o", "{'k':4}");
  done_q(wf, &r, "no", "Sure! The result is {'k': {'deep': [5]}} - hope that helps.");
  assert_state_q(&r, "o", "{'k':{'deep':[5]}}");
  done_fails(wf, &r, "no", "no JSON here", "node no: output 'o' must be an object, got \"no JSON here\"");
  done_fails(wf, &r, "no", "[1, 2]", "must be an object");
  /* array */
  done_q(wf, &r, "na", "[1, 'two']");
  assert_state_q(&r, "a", "[1,'two']");
  done_q(wf, &r, "na", "The list: [3, 4]. Done.");
  assert_state_q(&r, "a", "[3,4]");
  done_fails(wf, &r, "na", "{}", "node na: output 'a' must be an array");
  /* any: JSON when it parses, else the text. */
  done_raw(wf, &r, "nx", "42");
  assert_state_q(&r, "x", "42");
  done_q(wf, &r, "nx", "{'a':true}");
  assert_state_q(&r, "x", "{'a':true}");
  done_raw(wf, &r, "nx", "just words");
  assert_state_q(&r, "x", "'just words'");
  /* No output: only the text and the counters. */
  done_raw(wf, &r, "nq", "yes please");
  assert_string_equal(r.last_output, "yes please");
  assert_int_equal(r.visits[node_of(wf, "nq")], 1);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

static void test_field_outputs(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(OUTPUTS);
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  done_q(wf, &r, "nf", "{'passed': true, 'report': 'all good', 'score': 9.5}");
  assert_state_q(&r, "passed", "true");
  assert_state_q(&r, "report", "'all good'");
  assert_state_q(&r, "score", "9.5");
  /* Fenced, strings for a boolean and a number, a non-string into a string key (its JSON). */
  done_q(wf, &r, "nf", "Verdict:\n```json\n{'passed': 'no', 'report': {'failed': 2}, 'score': ' 3 '}\n```");
  assert_state_q(&r, "passed", "false");
  assert_state_q(&r, "report", "'{\\'failed\\':2}'");
  assert_state_q(&r, "score", "3");
  /* A missing field, a text with no object, a field of the wrong type: the node fails and no
   * output is taken, not even those before the bad one (report is the first output). */
  done_fails(wf, &r, "nf", "{\"passed\": true, \"report\": \"x\"}",
             "node nf: the output has no field 'score' (for state key 'score')");
  done_fails(wf, &r, "nf", "I think it passed.",
             "node nf: output 'report' must be a JSON object with the field 'report', got \"I think it passed.\"");
  done_fails(wf, &r, "nf", "{\"report\": \"new\", \"passed\": \"maybe\", \"score\": 1}",
             "node nf: output 'passed' must be a boolean, got \"maybe\"");
  done_fails(wf, &r, "nf", "{\"report\": \"new\", \"passed\": true, \"score\": [1]}",
             "node nf: output 'score' must be a number, got \"[1]\"");
  assert_state_q(&r, "report", "'{\\'failed\\':2}'");
  /* The quoted text is cut at 80 bytes, at a character boundary. */
  char *longtext = malloc(301);
  memset(longtext, 'x', 300);
  longtext[300] = '\0';
  char want[128];
  snprintf(want, sizeof want, "got \"%.80s...\"", longtext);
  done_fails(wf, &r, "nn", longtext, want);
  free(longtext);
  char utf[200] = "a";
  size_t ul = 1;
  for (int i = 0; i < 60; i++)
    ul += (size_t)snprintf(utf + ul, sizeof utf - ul, "\xc3\xa9"); /* "a" and 60 é: 121 bytes; byte 80 is inside an é */
  char want_utf[128] = "got \"a";
  size_t wl = strlen(want_utf);
  for (int i = 0; i < 39; i++)
    wl += (size_t)snprintf(want_utf + wl, sizeof want_utf - wl, "\xc3\xa9");
  snprintf(want_utf + wl, sizeof want_utf - wl, "...\"");
  done_fails(wf, &r, "nb", utf, want_utf);
  utf[80] = '\0'; /* "a", 39 é and a lone lead byte: not UTF-8 */
  done_fails(wf, &r, "ns", utf, "node ns: its text is not valid UTF-8");
  /* The state's cap: one big string fits, a second one does not. */
  size_t big = 600u << 10;
  char *text = malloc(big + 1);
  memset(text, 'y', big);
  text[big] = '\0';
  done_raw(wf, &r, "ns", text);
  assert_int_equal(ag_json_str_len(st(&r, "s")), big);
  char *json = malloc(big + 64);
  snprintf(json, big + 64, "{\"report\": \"%s\", \"passed\": true, \"score\": 1}", text);
  done_fails(wf, &r, "nf", json, "node nf: the state would be larger than 1024 KiB");
  free(json);
  char *huge = malloc(AG_WF_STATE_MAX + 2);
  memset(huge, 'z', AG_WF_STATE_MAX + 1);
  huge[AG_WF_STATE_MAX + 1] = '\0';
  done_fails(wf, &r, "nq", huge, "node nq: its text is larger than 1024 KiB");
  free(huge);
  free(text);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

/* ---------- merge and set ---------- */

static void test_merge(void **state) {
  (void)state;
  ag_workflow *wf =
      compile_ok("{'state':{'plan':'string','n':'number','out':'string','o1':'object','o2':'any','om':'object',"
                 "          'a1':'array','a2':'array','am':'array'},"
                 " 'entry':'ms','nodes':{'ms':{'builtin':'merge','inputs':['plan','n','o1'],'output':'out'},"
                 "  'mo':{'builtin':'merge','inputs':['o1','o2'],'output':'om'},"
                 "  'ma':{'builtin':'merge','inputs':['a1','a2','a1'],'output':'am'}},"
                 " 'edges':[{'from':'ms','to':'mo'},{'from':'mo','to':'ma'}]}");
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  set_state_q(&r, "plan", "'the plan'");
  set_state_q(&r, "n", "2.5");
  set_state_q(&r, "o1", "{'a':1,'b':1}");
  set_state_q(&r, "o2", "{'b':2,'c':[3]}");
  set_state_q(&r, "a1", "[1]");
  set_state_q(&r, "a2", "['x',{'y':2}]");
  done_q(wf, &r, "ms", NULL);
  assert_string_equal(ag_json_str(st(&r, "out")), "the plan\n\n2.5\n\n{\"a\":1,\"b\":1}");
  assert_string_equal(r.last_output, "the plan\n\n2.5\n\n{\"a\":1,\"b\":1}");
  done_q(wf, &r, "mo", NULL);
  assert_state_q(&r, "om", "{'a':1,'b':2,'c':[3]}"); /* left to right: o2's b wins */
  ag_json *last = ag_json_parse(r.last_output, strlen(r.last_output), NULL, 0);
  assert_true(ag_json_equal(last, st(&r, "om")));
  ag_json_free(last);
  done_q(wf, &r, "ma", NULL);
  assert_state_q(&r, "am", "[1,'x',{'y':2},1]");
  /* An "any" input that holds no object fails the node, naming it. */
  set_state_q(&r, "o2", "'text'");
  done_fails(wf, &r, "mo", NULL, "node mo: merge input 'o2' is not an object");
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

static void test_set(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(
      "{'state':{'verdict':{'type':'string','default':'old'},'n':'integer','count':'integer','obj':'object',"
      "          'copy':'object','greeting':'string','flag':'boolean','ratio':'number','list':'array'},"
      " 'nodes':{'z':{'builtin':'set','values':{'verdict':'','count':'{state.n}','copy':'{state.obj}',"
      "   'greeting':'hi {task}: {state.n} {{x}}','flag':true,'list':['{state.n}','{state.n}!',{'o':'{state.obj}'}]}},"
      "  'y':{'builtin':'set','values':{'count':'{state.ratio}'}}},"
      " 'entry':'z','edges':[{'from':'z','to':'y'}]}");
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  set_state_q(&r, "n", "5");
  set_state_q(&r, "obj", "{'k':[1,{'d':true}]}");
  done_q(wf, &r, "z", NULL);
  assert_state_q(&r, "verdict", "''");
  assert_state_q(&r, "count", "5");
  assert_true(ag_json_is(st(&r, "count"), AG_JSON_INT)); /* the value, not its text */
  assert_state_q(&r, "copy", "{'k':[1,{'d':true}]}");
  assert_true(st(&r, "copy") != st(&r, "obj")); /* a copy, not a shared value */
  assert_state_q(&r, "greeting", "'hi the task: 5 {x}'");
  assert_state_q(&r, "flag", "true");
  assert_state_q(&r, "list", "[5,'5!',{'o':{'k':[1,{'d':true}]}}]");
  /* Its text: the JSON of the values it set. */
  ag_json *last = ag_json_parse(r.last_output, strlen(r.last_output), NULL, 0), *want = ag_json_object_new();
  assert_non_null(last);
  static const char *const keys[] = {"verdict", "count", "copy", "greeting", "flag", "list"};
  for (size_t i = 0; i < 6; i++)
    assert_int_equal(ag_json_set_take(want, keys[i], ag_json_copy(st(&r, keys[i]))), 0);
  assert_true(ag_json_equal(last, want));
  ag_json_free(last);
  ag_json_free(want);
  /* A number into an integer: fine when integral, a failure (state unchanged) when not. */
  set_state_q(&r, "ratio", "6.0");
  done_q(wf, &r, "y", NULL);
  assert_state_q(&r, "count", "6");
  set_state_q(&r, "ratio", "2.5");
  done_fails(wf, &r, "y", NULL, "node y: output 'count' must be an integer, got \"2.5\"");
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

/* ---------- conditions ---------- */

/* Does `when` hold with `state` merged into the defaults and `output` as the last text? */
static bool holds(const char *when_q, const char *state_q, const char *output) {
  char doc[2048];
  snprintf(
      doc, sizeof doc,
      "{'state':{'s':'string','n':'number','i':'integer','b':'boolean','arr':'array','o':'object','x':'any'},"
      " 'entry':'a','nodes':{'a':{'builtin':'condition'},'hit':{'builtin':'condition'},'miss':{'builtin':'condition'}},"
      " 'edges':[{'from':'a','to':'hit','when':%s},{'from':'a','to':'miss'}]}",
      when_q);
  ag_workflow *wf = compile_ok(doc);
  ag_wf_run r;
  char err[256];
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  ag_json *s = parse_q(state_q ? state_q : "{}");
  for (void *it = ag_json_iter(s); it; it = ag_json_iter_next(s, it))
    assert_int_equal(ag_json_set_take(r.state, ag_json_iter_key(it), ag_json_copy(ag_json_iter_value(it))), 0);
  ag_json_free(s);
  done_q(wf, &r, "a", NULL);
  if (output) {
    free(r.last_output);
    r.last_output = strdup(output);
  }
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  bool hit = strcmp(at(wf, &r), "hit") == 0;
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
  return hit;
}

static void test_conditions(void **state) {
  (void)state;
  /* == by JSON equality, numbers by value */
  assert_true(holds("{'state.n':1}", "{'n':1.0}", NULL));
  assert_false(holds("{'state.n':1}", "{'n':2}", NULL));
  assert_true(holds("{'state.s':{'==':'x'}}", "{'s':'x'}", NULL));
  assert_false(holds("{'state.s':{'==':'x'}}", "{'s':'X'}", NULL));
  assert_true(holds("{'state.b':true}", "{'b':true}", NULL));
  assert_false(holds("{'state.b':true}", NULL, NULL));
  assert_true(holds("{'state.o':{'==':{'a':[1,{'b':null}]}}}", "{'o':{'a':[1.0,{'b':null}]}}", NULL));
  assert_false(holds("{'state.o':{'==':{'a':[1,{'b':null}]}}}", "{'o':{'a':[1,{'b':0}]}}", NULL));
  assert_true(holds("{'state.x':null}", NULL, NULL)); /* an "any" key's default */
  /* != */
  assert_true(holds("{'state.s':{'!=':'x'}}", "{'s':'y'}", NULL));
  assert_false(holds("{'state.s':{'!=':'x'}}", "{'s':'x'}", NULL));
  /* orders on numbers */
  assert_true(holds("{'state.n':{'<':3}}", "{'n':2.5}", NULL));
  assert_false(holds("{'state.n':{'<':3}}", "{'n':3}", NULL));
  assert_true(holds("{'state.n':{'<=':3}}", "{'n':3}", NULL));
  assert_false(holds("{'state.n':{'<=':3}}", "{'n':3.01}", NULL));
  assert_true(holds("{'state.i':{'>':3}}", "{'i':4}", NULL));
  assert_false(holds("{'state.i':{'>':3}}", "{'i':3}", NULL));
  assert_true(holds("{'state.i':{'>=':3}}", "{'i':3}", NULL));
  assert_false(holds("{'state.i':{'>=':3}}", "{'i':2}", NULL));
  /* ... and on strings, bytewise */
  assert_true(holds("{'state.s':{'<':'b'}}", "{'s':'abc'}", NULL));
  assert_false(holds("{'state.s':{'<':'b'}}", "{'s':'c'}", NULL));
  assert_true(holds("{'state.s':{'>=':'ab'}}", "{'s':'abc'}", NULL));
  assert_false(holds("{'state.s':{'>':'abc'}}", "{'s':'abc'}", NULL));
  assert_true(holds("{'state.s':{'<':'abc'}}", "{'s':'ab'}", NULL)); /* a prefix sorts first */
  assert_false(holds("{'state.s':{'<=':'ab'}}", "{'s':'abc'}", NULL));
  /* a string against a number: simply false (and so != holds) */
  assert_false(holds("{'state.s':3}", "{'s':'3'}", NULL));
  assert_false(holds("{'state.s':{'<':5}}", "{'s':'3'}", NULL));
  assert_false(holds("{'state.s':{'>=':5}}", "{'s':'3'}", NULL));
  assert_true(holds("{'state.s':{'!=':3}}", "{'s':'3'}", NULL));
  /* in */
  assert_true(holds("{'state.s':{'in':['x','y']}}", "{'s':'y'}", NULL));
  assert_false(holds("{'state.s':{'in':['x','y']}}", "{'s':'z'}", NULL));
  assert_true(holds("{'state.n':{'in':[1,2]}}", "{'n':2.0}", NULL));
  assert_false(holds("{'state.n':{'in':['2']}}", "{'n':2}", NULL));
  /* contains: a substring (case-sensitive), or an equal element */
  assert_true(holds("{'output':{'contains':'PASS'}}", NULL, "ALL TESTS PASS"));
  assert_false(holds("{'output':{'contains':'PASS'}}", NULL, "all tests pass"));
  assert_true(holds("{'state.arr':{'contains':2}}", "{'arr':[1,2.0]}", NULL));
  assert_false(holds("{'state.arr':{'contains':2}}", "{'arr':[1,3,'2']}", NULL));
  assert_true(holds("{'state.arr':{'contains':{'k':1}}}", "{'arr':[{'k':1.0}]}", NULL));
  assert_false(holds("{'state.n':{'contains':1}}", "{'n':1}", NULL));
  /* output, transitions, visits */
  assert_true(holds("{'output':''}", NULL, NULL)); /* a condition node's text */
  assert_true(holds("{'output':'done'}", NULL, "done"));
  assert_false(holds("{'output':'done'}", NULL, "done."));
  assert_true(holds("{'transitions':1}", NULL, NULL));
  assert_false(holds("{'transitions':{'>':1}}", NULL, NULL));
  assert_true(holds("{'visits.a':1}", NULL, NULL));
  assert_false(holds("{'visits.hit':{'>=':1}}", NULL, NULL));
  /* all, any, not */
  const char *all = "{'all':[{'state.b':true},{'state.n':{'>':0}}]}";
  assert_true(holds(all, "{'b':true,'n':1}", NULL));
  assert_false(holds(all, "{'b':true,'n':0}", NULL));
  assert_false(holds(all, "{'b':false,'n':1}", NULL));
  const char *any = "{'any':[{'state.b':true},{'state.n':{'>':0}}]}";
  assert_true(holds(any, "{'b':false,'n':1}", NULL));
  assert_true(holds(any, "{'b':true,'n':0}", NULL));
  assert_false(holds(any, "{'b':false,'n':0}", NULL));
  assert_true(holds("{'not':{'state.b':true}}", "{'b':false}", NULL));
  assert_false(holds("{'not':{'state.b':true}}", "{'b':true}", NULL));
  const char *nested = "{'all':[{'any':[{'state.s':'a'},{'state.s':'b'}]},{'not':{'state.i':{'in':[0,1]}}}]}";
  assert_true(holds(nested, "{'s':'b','i':2}", NULL));
  assert_false(holds(nested, "{'s':'b','i':1}", NULL));
  assert_false(holds(nested, "{'s':'c','i':2}", NULL));
}

/* ---------- rendering ---------- */

static void test_render(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok("{'state':{'plan':'string','n':'integer','o':'object','big':'string'},"
                               " 'nodes':{'t':{'tool':'web_search','args':{'query':'{task}','n':'{state.n}','o':'{"
                               "state.o}','text':'{state.n} items',"
                               "   'nested':{'list':['{state.plan} "
                               "now','{output}',5,null,{'deep':'{state.o}'}]},'lit':'{ x }','esc':'{{task}}'}},"
                               "  'u':{'tool':'current_time'}},"
                               " 'entry':'t','edges':[{'from':'t','to':'u'}]}");
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  set_state_q(&r, "plan", "'P'");
  set_state_q(&r, "n", "3");
  set_state_q(&r, "o", "{'a':[1,2]}");
  r.last_output = strdup("prev");
  char *s = ag_wf_render(
      "{task}|{state.plan}|{output}|{state.n}|{state.o}|{{task}}|{x}|{|}|{state.nokey}|{{|}}|{ task}", "T", &r);
  assert_string_equal(s, "T|P|prev|3|{\"a\":[1,2]}|{task}|{x}|{|}|{state.nokey}|{|}|{ task}");
  free(s);
  /* NULL task, NULL output, NULL template, no run. */
  free(r.last_output);
  r.last_output = NULL;
  s = ag_wf_render("[{task}][{output}]", NULL, &r);
  assert_string_equal(s, "[][]");
  free(s);
  s = ag_wf_render(NULL, "T", &r);
  assert_string_equal(s, "");
  free(s);
  s = ag_wf_render("{state.plan}", "T", NULL);
  assert_string_equal(s, "{state.plan}");
  free(s);
  /* The cap: six copies of a 900 KiB value are cut at 4 MiB. */
  size_t big = 900u << 10;
  char *text = malloc(big + 1);
  memset(text, 'b', big);
  text[big] = '\0';
  assert_int_equal(ag_json_set_take(r.state, "big", ag_json_string_new(text)), 0);
  free(text);
  s = ag_wf_render("{state.big}{state.big}{state.big}{state.big}{state.big}{state.big}", "T", &r);
  assert_int_equal(strlen(s), 4u << 20);
  free(s);
  assert_int_equal(ag_json_set_take(r.state, "big", ag_json_string_new("")), 0);

  /* Args: exact references keep their types; other strings are rendered. */
  r.last_output = strdup("prev");
  const ag_wf_node *t = ag_workflow_node(wf, node_of(wf, "t"));
  char *args = ag_wf_render_args(t, "find cats", &r);
  assert_non_null(args);
  ag_json *have = ag_json_parse(args, strlen(args), NULL, 0);
  ag_json *want =
      parse_q("{'query':'find cats','n':3,'o':{'a':[1,2]},'text':'3 items',"
              "'nested':{'list':['P now','prev',5,null,{'deep':{'a':[1,2]}}]},'lit':'{ x }','esc':'{task}'}");
  if (!ag_json_equal(have, want)) fail_msg("args: %s", args);
  assert_true(ag_json_is(ag_json_get(have, "n"), AG_JSON_INT));
  ag_json_free(have);
  ag_json_free(want);
  free(args);
  args = ag_wf_render_args(ag_workflow_node(wf, node_of(wf, "u")), "x", &r);
  assert_string_equal(args, "{}");
  free(args);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

static void test_answer(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok("{'state':{'code':'string'},'answer':'Done: {state.code} for {task}',"
                               "'nodes':{'a':{'agent':'x','output':'code'}}}");
  ag_wf_run r;
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  done_q(wf, &r, "a", "int main;");
  char *s = ag_wf_answer(wf, &r, "T");
  assert_string_equal(s, "Done: int main; for T");
  free(s);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
  wf = compile_ok("{'nodes':{'a':{'agent':'x'}}}");
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  s = ag_wf_answer(wf, &r, "T");
  assert_string_equal(s, ""); /* nothing ran */
  free(s);
  done_q(wf, &r, "a", "the text");
  s = ag_wf_answer(wf, &r, "T");
  assert_string_equal(s, "the text");
  free(s);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

/* ---------- checkpoints ---------- */

static void assert_runs_equal(const ag_workflow *wf, const ag_wf_run *a, const ag_wf_run *b) {
  assert_int_equal(a->node, b->node);
  assert_true(ag_json_equal(a->state, b->state));
  for (size_t i = 0; i < ag_workflow_n_nodes(wf); i++)
    assert_int_equal(a->visits[i], b->visits[i]);
  for (size_t i = 0; i < 5; i++)
    assert_int_equal(a->edge_uses[i], b->edge_uses[i]);
  assert_int_equal(a->transitions, b->transitions);
  assert_int_equal(a->waiting, b->waiting);
  assert_int_equal(a->deadline, b->deadline);
  if (a->last_output || b->last_output) assert_string_equal(a->last_output, b->last_output);
}

/* Loading the checkpoint `mutate`d fails with `want`. */
static void load_fails(const ag_workflow *wf, const char *good, const char *key, const char *value_q,
                       const char *want) {
  ag_json *j = ag_json_parse(good, strlen(good), NULL, 0);
  assert_non_null(j);
  char path[64];
  snprintf(path, sizeof path, "%s", key);
  char *dot = strchr(path, '.');
  ag_json *obj = j;
  if (dot) { /* "state.x": a member of state */
    *dot = '\0';
    obj = ag_json_get(j, path);
    memmove(path, dot + 1, strlen(dot + 1) + 1);
  }
  if (value_q)
    assert_int_equal(ag_json_set_take(obj, path, parse_q(value_q)), 0);
  else
    assert_int_equal(ag_json_del(obj, path), 0);
  char *text = ag_json_dumps(j);
  ag_json_free(j);
  ag_wf_run r;
  char err[256] = "";
  assert_int_equal(ag_wf_run_load(wf, text, &r, err, sizeof err), AG_EINVAL);
  if (!strstr(err, want)) fail_msg("error '%s' does not mention '%s'", err, want);
  assert_null(r.state);
  free(text);
}

static void test_checkpoint(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(ENGINEERING);
  ag_wf_run r, back;
  char err[256] = "";
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  /* A fresh run round-trips (no last output: null). */
  char *d = ag_wf_run_dump(wf, &r);
  assert_non_null(strstr(d, "\"last_output\":null"));
  assert_non_null(strstr(d, "\"visits\":{}"));
  assert_int_equal(ag_wf_run_load(wf, d, &back, err, sizeof err), 0);
  assert_runs_equal(wf, &r, &back);
  assert_null(back.last_output);
  ag_wf_run_deinit(&back);
  free(d);
  /* Part way: the developer is waiting. */
  done_q(wf, &r, "architect", "the plan");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  done_q(wf, &r, "developer", "code \"1\"\n");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  done_q(wf, &r, "tester", "{'passed': false, 'verdict': 'nope'}");
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_string_equal(at(wf, &r), "developer");
  r.waiting = true;
  r.deadline = 1760000000123LL;
  d = ag_wf_run_dump(wf, &r);
  assert_non_null(d);
  assert_int_equal(ag_wf_run_load(wf, d, &back, err, sizeof err), 0);
  assert_runs_equal(wf, &r, &back);
  char *d2 = ag_wf_run_dump(wf, &back);
  assert_string_equal(d, d2);
  free(d2);
  ag_wf_run_deinit(&back);
  /* Only nonzero visits are written. */
  assert_non_null(strstr(d, "\"visits\":{\"architect\":1,\"developer\":1,\"tester\":1}"));
  assert_non_null(strstr(d, "\"edges\":[1,1,0,1,0]"));

  /* Damaged: an unknown node, edges of the wrong length, a state member that is no key or not of
   * its type, negative counters, an unknown field, and no JSON at all. */
  load_fails(wf, d, "node", "'devloper'", "checkpoint.node: no node 'devloper' in this workflow");
  load_fails(wf, d, "edges", "[1,1,0,1]", "checkpoint.edges: an array of 5 counters");
  load_fails(wf, d, "edges", "[1,1,0,1,-1]", "checkpoint.edges[4] must be an integer from 0");
  load_fails(wf, d, "edges", NULL, "checkpoint.edges: an array of 5 counters");
  load_fails(wf, d, "state.colour", "'red'", "checkpoint.state.colour: no state key 'colour'");
  load_fails(wf, d, "state.passed", "'yes'", "checkpoint.state.passed must be a boolean");
  load_fails(wf, d, "transitions", "-1", "checkpoint.transitions must be an integer from 0");
  load_fails(wf, d, "visits", "{'tester':-2}", "checkpoint.visits.tester must be an integer from 0");
  load_fails(wf, d, "visits", "{'tset':1}", "checkpoint.visits.tset: no node 'tset'");
  load_fails(wf, d, "deadline", "-5", "checkpoint.deadline must be an integer from 0");
  load_fails(wf, d, "waiting", "1", "checkpoint.waiting must be true or false");
  load_fails(wf, d, "extra", "1", "checkpoint: 'extra' is not a field here");
  load_fails(wf, d, "node", NULL, "checkpoint.node");
  assert_int_equal(ag_wf_run_load(wf, "{\"node\":", &back, err, sizeof err), AG_EINVAL);
  assert_non_null(strstr(err, "checkpoint: not a JSON object"));

  /* Missing state keys get their defaults; "end" is a node of every checkpoint. */
  assert_int_equal(
      ag_wf_run_load(wf, "{\"node\":\"end\",\"state\":{\"code\":\"c\"},\"edges\":[0,0,0,0,0]}", &back, err, sizeof err),
      0);
  assert_int_equal(back.node, AG_WF_END);
  assert_state_q(&back, "code", "'c'");
  assert_state_q(&back, "report", "'none yet'");
  assert_state_q(&back, "passed", "false");
  assert_int_equal(back.transitions, 0);
  ag_wf_run_deinit(&back);
  free(d);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

/* ---------- waits ---------- */

static void test_escalate(void **state) {
  (void)state;
  ag_workflow *wf = compile_ok(
      "{'state':{'plan':{'type':'string','default':'v1'},'approval':'string'},'entry':'approve',"
      " 'nodes':{'approve':{'human':'Ship {state.plan}?','output':'approval','timeout_s':3600,'on_timeout':'boss'},"
      "  'boss':{'agent':'boss','timeout_s':60,'on_timeout':'end'},'quiet':{'human':'Anyone?'}},"
      " 'edges':[{'from':'approve','to':'end'},{'from':'boss','to':'quiet'}]}");
  ag_wf_run r;
  char err[256];
  assert_int_equal(ag_wf_run_init(wf, &r), 0);
  char *q = ag_wf_render(ag_workflow_node(wf, r.node)->input, "T", &r);
  assert_string_equal(q, "Ship v1?");
  free(q);
  r.waiting = true;
  r.deadline = 5000;
  assert_int_equal(ag_wf_escalate(wf, &r), 0);
  assert_string_equal(at(wf, &r), "boss");
  assert_false(r.waiting);
  assert_int_equal(r.deadline, 0);
  assert_int_equal(r.edge_uses[0], 0); /* not an edge */
  assert_int_equal(r.visits[0], 0);    /* the wait did not finish */
  assert_int_equal(r.transitions, 0);
  /* boss escalates to the end; quiet has no on_timeout; nor has the end. */
  assert_int_equal(ag_wf_escalate(wf, &r), 0);
  assert_int_equal(r.node, AG_WF_END);
  assert_int_equal(ag_wf_escalate(wf, &r), AG_ENOTFOUND);
  r.node = node_of(wf, "quiet");
  r.waiting = true;
  assert_int_equal(ag_wf_escalate(wf, &r), AG_ENOTFOUND);
  assert_string_equal(at(wf, &r), "quiet");
  assert_true(r.waiting);
  /* An answer in time: the human node's output, and the wait is over. */
  r.node = node_of(wf, "approve");
  r.deadline = 5000;
  assert_int_equal(ag_wf_node_done(wf, &r, "T", "yes, ship it", err, sizeof err), 0);
  assert_state_q(&r, "approval", "'yes, ship it'");
  assert_false(r.waiting);
  assert_int_equal(r.deadline, 0);
  assert_int_equal(ag_wf_advance(wf, &r, err, sizeof err), 0);
  assert_int_equal(r.node, AG_WF_END);
  ag_wf_run_deinit(&r);
  ag_workflow_free(wf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_compile_graph),
      cmocka_unit_test(test_engineering_loop),
      cmocka_unit_test(test_max_visits_and_no_edge),
      cmocka_unit_test(test_max_transitions),
      cmocka_unit_test(test_outputs),
      cmocka_unit_test(test_field_outputs),
      cmocka_unit_test(test_merge),
      cmocka_unit_test(test_set),
      cmocka_unit_test(test_conditions),
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_answer),
      cmocka_unit_test(test_checkpoint),
      cmocka_unit_test(test_escalate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
