/* agentd entry point (placeholder until the server wiring lands). */
#include <stdio.h>

int main(void) {
  puts("agentd");
  return 0;
}
