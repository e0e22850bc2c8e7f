/* The reference task of ../shared/BENCH.md, shared by the benchmark's fake upstream (fake_llm.c),
 * its load generator (loadgen.c) and its driver (run.mjs reads the same texts from here).
 *
 * A session: the client asks the support agent "Where is my order A-17?"; the upstream answers the
 * first call with a streamed lookup_order tool call (AG_REF_TOOL_FRAGMENTS argument fragments), the
 * agent runs the tool, and the upstream answers the second call with AG_REF_ANSWER streamed as
 * AG_REF_DELTAS content deltas. A session counts only if the client received exactly AG_REF_ANSWER. */
#ifndef AG_BENCH_REF_TASK_H
#define AG_BENCH_REF_TASK_H

#define AG_REF_SYSTEM "You are a customer-support agent. Use the lookup_order tool to answer questions about orders."
#define AG_REF_USER "Where is my order A-17?"
#define AG_REF_TOOL "lookup_order"
#define AG_REF_TOOL_PARAMS                                                                                             \
  "{\"type\":\"object\",\"properties\":{\"order_id\":{\"type\":\"string\",\"description\":\"The order id, e.g. "       \
  "A-17\"}},\"required\":[\"order_id\"],\"additionalProperties\":false}"
#define AG_REF_TOOL_ARGS "{\"order_id\":\"A-17\"}"
#define AG_REF_TOOL_RESULT                                                                                             \
  "{\"order_id\":\"A-17\",\"status\":\"shipped\",\"carrier\":\"DHL Express\",\"tracking\":\"1Z-4417-0093\","           \
  "\"eta\":\"2025-11-25\"}"
#define AG_REF_TOOL_FRAGMENTS 8
#define AG_REF_DELTAS 200

/* About 880 characters, plain ASCII without quotes or backslashes (so every delta is the same
 * bytes in JSON). */
#define AG_REF_ANSWER                                                                                                  \
  "Thank you for your patience. Your order A-17 has shipped and is on its way with DHL Express. "                      \
  "The tracking number is 1Z-4417-0093, and you can follow the parcel on the DHL website or in the DHL app "           \
  "by entering that number. The estimated delivery date is 2025-11-25. DHL usually updates the tracking "              \
  "page within a few hours of each scan, so if the status looks unchanged for a day, that is normal while "            \
  "the parcel moves between hubs. If nobody is at home when the courier arrives, DHL leaves a notice with "            \
  "the options for a second delivery attempt or a pickup point near you. Should the parcel not arrive by the "         \
  "estimated date, or if it arrives "                                                                                  \
  "damaged, reply to this message with your order number and a short description, and we will open a claim "           \
  "with the carrier right away and arrange a replacement or a refund, whichever you prefer. Is there anything "        \
  "else I can help you with today?"

#endif
