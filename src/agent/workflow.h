/* Workflow graphs: the template kind "workflow" (seed 004's graph of agents with subgraphs and
 * iteration limits). This file is the graph and its arithmetic, pure computation without I/O: the
 * document's "workflow" section compiled, the run's checkpoint (current node, typed shared state,
 * counters) and the moves between nodes. agent/session_workflow.c drives a session through it
 * (children for agent nodes, tool calls, human waits, commits).
 *
 *   "workflow": {
 *     "state": {"plan": "string", "code": "string", "passed": "boolean",
 *               "report": {"type": "string", "default": ""}, "approval": "string"},
 *     "entry": "architect",
 *     "max_transitions": 50,
 *     "answer": "{state.code}",
 *     "nodes": {
 *       "architect": {"agent": "architect", "input": "Plan this: {task}", "output": "plan"},
 *       "developer": {"agent": "developer", "input": "{state.plan}\n{state.report}", "output": "code"},
 *       "tester":    {"agent": "tester", "input": "{state.code}", "output": {"passed": "passed", "report": "report"}},
 *       "approve":   {"human": "Ship {state.plan}?", "output": "approval", "timeout_s": 3600, "on_timeout": "reset"},
 *       "reset":     {"builtin": "set", "values": {"approval": "escalated"}}
 *     },
 *     "edges": [
 *       {"from": "architect", "to": "developer"},
 *       {"from": "developer", "to": "tester"},
 *       {"from": "tester", "to": "approve", "when": {"state.passed": true}},
 *       {"from": "tester", "to": "developer", "max_iterations": 2},
 *       {"from": "tester", "to": "end"},
 *       {"from": "approve", "to": "end"},
 *       {"from": "reset", "to": "end"}
 *     ]}
 *
 * (A subgraph node is {"workflow": "<template>", ...}; a tool node {"tool": "web_search", "args":
 * {"query": "{task}"}, "output": "found"}; built-ins {"builtin": "condition"} and {"builtin":
 * "merge", "inputs": ["plan", "code"], "output": "summary"}. Every node but the entry must be
 * reachable by an edge or an on_timeout; templates/examples/engineering.json is a complete one.)
 *
 * State: each key has a type (string, number, integer, boolean, object, array, any) and an
 * optional default (else "", 0, false, {}, [], null). Nodes (1..AG_WF_MAX_NODES, names as
 * template names; "end" is reserved): agent (a template of any kind run as a child session with
 * the rendered input as its task), workflow (the same, for a template that must be a workflow: a
 * subgraph), tool (a catalog or built-in tool called with args, whose string values are rendered;
 * a string that is exactly "{state.k}" or "{task}" is replaced by the value itself, not its text),
 * human (the rendered question goes to the user; the session waits; the answer is the output),
 * builtin condition (does nothing: a branch point), merge (the values of `inputs` combined:
 * strings joined by a blank line, objects merged left to right, arrays concatenated, into the
 * output key) and set (`values`, whose strings are rendered, assigned to their keys).
 *
 * Output: "output": "<key>" puts the node's whole text into the key, converted to its type (a
 * number or a boolean is read from the text; an object or an array is the JSON in the text, also
 * inside a ```json fence or after prose); "output": {"<key>": "<field>", ...} reads the text as a
 * JSON object and puts each field into its key. A text that does not fit its type fails the node.
 * A node without output only moves the run on.
 *
 * Rendering ({task}, {state.<key>}, {output}: the previous node's text; {{ and }} are literal
 * braces; any other brace is copied as it is): strings as they are, anything else as JSON.
 *
 * Edges: after a node runs, the edges leaving it are tried in array order and the first whose
 * `when` holds and whose `max_iterations` (how many times the edge may be taken in one run) is not
 * used up is taken; an edge into a node that already ran its `max_visits` times is passed over.
 * "to": "end" ends the run. A node with no edges leaving it ends the run; a node whose edges all
 * fail stops the run with an error naming it. `when` is a condition in the rules' syntax
 * ({"all": [...]}, {"any": [...]}, {"not": c}, {"<variable>": value} for equality (an object
 * value is read as operators: compare with an object as {"==": {...}}),
 * {"<variable>": {"<op>": value}} with ==, !=, <, <=, >, >=, in, contains) over the variables
 * state.<key>, visits.<node> (how many times it ran), transitions (node runs so far) and output
 * (the text of the node that just ran). Every run is capped by max_transitions (default 100, at
 * most AG_WF_MAX_TRANSITIONS): no model output can loop it for ever.
 *
 * Answer: "answer" rendered at the end; without it, the last node's text.
 *
 * Waits: a human node, or an agent node whose child asks for a clarification, waits; with
 * timeout_s (1 .. 30 days) and on_timeout (a node), a wait with no answer by then escalates: the run
 * goes on at on_timeout. */
#ifndef AG_AGENT_WORKFLOW_H
#define AG_AGENT_WORKFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/json.h"

#define AG_WF_MAX_NODES 64
#define AG_WF_MAX_EDGES 256
#define AG_WF_MAX_KEYS 64
#define AG_WF_MAX_TRANSITIONS 1000
#define AG_WF_DEFAULT_TRANSITIONS 100
/* Largest serialized state of a run; a node whose output would pass it fails. */
#define AG_WF_STATE_MAX (1u << 20)
/* The "workflow" section's largest JSON text. */
#define AG_WF_DOC_MAX (256u << 10)
/* Node index of the end. */
#define AG_WF_END (-1)

enum ag_wf_node_kind {
  AG_WF_AGENT = 0,
  AG_WF_SUBGRAPH = 1,
  AG_WF_TOOL = 2,
  AG_WF_HUMAN = 3,
  AG_WF_CONDITION = 4,
  AG_WF_MERGE = 5,
  AG_WF_SET = 6,
};
const char *ag_wf_node_kind_name(int kind); /* "agent", "workflow", "tool", "human", "condition", "merge", "set" */

enum ag_wf_type { AG_WF_STRING, AG_WF_NUMBER, AG_WF_INTEGER, AG_WF_BOOLEAN, AG_WF_OBJECT, AG_WF_ARRAY, AG_WF_ANY };

typedef struct ag_wf_output {
  int key;     /* state key index */
  char *field; /* field of the JSON text, or NULL: the whole text */
} ag_wf_output;

typedef struct ag_wf_node {
  char *name;
  int kind;     /* enum ag_wf_node_kind */
  char *target; /* agent / workflow: template name; tool: tool name; else NULL */
  char *input;  /* agent / workflow: the task; human: the question (a rendering template); or NULL */
  char *args;   /* tool: JSON object text (its strings are rendering templates), or NULL ("{}") */
  char *values; /* set: JSON object text, or NULL */
  ag_wf_output *outputs;
  size_t n_outputs;
  int *inputs; /* merge: state key indexes */
  size_t n_inputs;
  int max_visits; /* 0: no cap */
  int timeout_s;  /* waits: escalate after this long; 0: never */
  int on_timeout; /* node index the escalation goes to; AG_WF_END; or -2 when none */
} ag_wf_node;

typedef struct ag_workflow ag_workflow;

/* Compiles the "workflow" section (borrowed). Errors name the field, as
 * "workflow.nodes.tester.output.passed: no state key 'passed'"; err gets the sentence. Node names
 * that are template or tool names are checked only for their form (what exists changes at runtime). */
AG_MUST_CHECK int ag_workflow_compile(const ag_json *section, ag_workflow **out, char *err, size_t errlen);
void ag_workflow_free(ag_workflow *wf);
/* The section as compiled, compact JSON text (owned by wf; re-compiles to the same graph). */
const char *ag_workflow_text(const ag_workflow *wf);

size_t ag_workflow_n_nodes(const ag_workflow *wf);
const ag_wf_node *ag_workflow_node(const ag_workflow *wf, int i); /* NULL when out of range */
int ag_workflow_find(const ag_workflow *wf, const char *name);    /* node index, AG_WF_END for "end", -2 unknown */
int ag_workflow_entry(const ag_workflow *wf);
int ag_workflow_max_transitions(const ag_workflow *wf);
/* Template names the agent and workflow nodes run (borrowed, distinct), for checks and docs. */
size_t ag_workflow_targets(const ag_workflow *wf, const char **names, size_t max);

/* A run's checkpoint: everything needed to go on after a restart. */
typedef struct ag_wf_run {
  int node;          /* the node to run next or running now; AG_WF_END once the run is over */
  ag_json *state;    /* object, key -> value (owned) */
  int *visits;       /* per node: how many times it ran (owned) */
  int *edge_uses;    /* per edge: how many times it was taken (owned) */
  int transitions;   /* node runs so far */
  bool waiting;      /* the node waits for an answer from the user */
  int64_t deadline;  /* Unix ms: a waiting node escalates after this; 0: never */
  char *last_output; /* text of the node that ran last, or NULL */
} ag_wf_run;

/* A fresh run at the entry node with the defaults of the state. */
AG_MUST_CHECK int ag_wf_run_init(const ag_workflow *wf, ag_wf_run *r);
void ag_wf_run_deinit(ag_wf_run *r);
/* The checkpoint as JSON text (owned), and back: the text names nodes, so a checkpoint that does
 * not fit the graph (a hand-edited row) is refused with a reason. */
char *ag_wf_run_dump(const ag_workflow *wf, const ag_wf_run *r);
AG_MUST_CHECK int ag_wf_run_load(const ag_workflow *wf, const char *json, ag_wf_run *r, char *err, size_t errlen);

/* Renders a node's input or question, or the answer (owned; NULL when out of memory). */
char *ag_wf_render(const char *tpl, const char *task, const ag_wf_run *r);
/* A tool node's arguments: its args with every string rendered (owned JSON text; NULL on ENOMEM). */
char *ag_wf_render_args(const ag_wf_node *n, const char *task, const ag_wf_run *r);

/* The node at r->node finished with `text`: r->last_output becomes the text, its outputs go into
 * the state (AG_EINVAL with the reason when the text does not fit; the state is then unchanged),
 * visits and transitions count the run. Condition, merge and set nodes pass text NULL (merge and
 * set compute their outputs here; their text is then "" for condition and the merged or set
 * values' JSON). */
AG_MUST_CHECK int ag_wf_node_done(const ag_workflow *wf, ag_wf_run *r, const char *task, const char *text, char *err,
                                  size_t errlen);
/* Moves r->node along the first edge that applies (counting its use), to AG_WF_END for "end" or
 * a node without edges. AG_ENOTFOUND with the reason when edges leave the node but none applies;
 * AG_ELIMIT when the run has made max_transitions node runs and would go on. */
AG_MUST_CHECK int ag_wf_advance(const ag_workflow *wf, ag_wf_run *r, char *err, size_t errlen);
/* A wait timed out: r->node moves to the node's on_timeout (not counted as an edge); AG_ENOTFOUND
 * when it has none. */
AG_MUST_CHECK int ag_wf_escalate(const ag_workflow *wf, ag_wf_run *r);
/* The run's answer (owned). */
char *ag_wf_answer(const ag_workflow *wf, const ag_wf_run *r, const char *task);

#endif
