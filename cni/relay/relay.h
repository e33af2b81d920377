/*
 * The `berth` CNI relay: shared declarations. See berth.c for what the
 * program does and docs/architecture.md for why it is this small.
 */
#ifndef BERTH_RELAY_H
#define BERTH_RELAY_H
#include <stddef.h>
#include <jansson.h>

/* Largest network config read from stdin. A real one is a few KiB; a runtime's
 * cached prevResult can be large, and DEL must still work with a 10 MB one. */
#define RELAY_MAX_STDIN (32u << 20)
/* Largest answer accepted from the agent (a result is well under 4 KiB). */
#define RELAY_MAX_ANSWER (4u << 20)
#define RELAY_DEFAULT_SOCKET "/run/berth/agent.sock"
#define RELAY_DEFAULT_JOURNAL "/var/lib/berth/del-journal"
/* Defaults of agentTimeoutMs, agentConnectTimeoutMs and agentAcceptTimeoutMs;
 * why these values: docs/cni-config.md "Timeouts". Keep them equal to
 * common/cni-config.ts DEFAULT_AGENT_*. */
#define RELAY_DEFAULT_TIMEOUT_MS 25000
#define RELAY_DEFAULT_CONNECT_MS 2000
#define RELAY_DEFAULT_ACCEPT_MS 1500
/* The wire format (common/relay-protocol.ts): the header's magic, and the
 * line an agent sends as soon as it has read the whole request. */
#define RELAY_MAGIC "BERTH/3"
#define RELAY_ACK "BERTH/3 accepted\n"
#define RELAY_LATEST_VERSION "1.1.0"

typedef struct {
  char *p;
  size_t n;
} buf_t;

/* What the relay reads from the config; defaults where a field is absent or unusable. */
struct relay_conf {
  json_t *root;        /* the parsed config, or NULL when stdin is not a JSON object */
  const char *version; /* supported cniVersion of the config, else RELAY_LATEST_VERSION */
  const char *socket;
  const char *journal_dir;
  long timeout_ms;
  long connect_ms;
  long accept_ms; /* for the agent's acknowledgement, from connect */
};

/* io.c */
int relay_read_fd(int fd, buf_t *out, size_t cap); /* 0, or -1 with errno (EFBIG past cap) */
int relay_write_all(int fd, const char *p, size_t n); /* 0, or -1 with errno */
/* One request to the agent. Returns NULL with the answer in *ans, or why nobody answered. */
const char *relay_exchange(const struct relay_conf *c, const char *command, const buf_t *in, int nsfd, int nserr,
                           buf_t *ans, char *why, size_t whylen);
const char *relay_errno_name(int err);

/* journal.c: 0, or -1 with why filled in. */
int relay_journal_del(const struct relay_conf *c, char *why, size_t whylen, char *id_out, size_t idlen);
void relay_journal_id(const char *pool, const char *cid, const char *ifname, char out[37]);

#endif
