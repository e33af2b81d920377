/*
 * berth: the CNI plugin binary, a relay to the host's agent.
 *
 * The runtime execs this once per verb. It reads the config on stdin and the
 * CNI_* environment, opens CNI_NETNS (here, in the runtime's mount namespace),
 * and hands all of it, the namespace as an fd over SCM_RIGHTS, to the agent
 * on its unix socket (`agentSocket`, default /run/berth/agent.sock). The
 * agent runs the whole CNI contract (cni/plugin.ts) and answers with the exit
 * code, stdout and stderr this process then reproduces. See
 * common/relay-protocol.ts for the wire format.
 *
 * It answers alone only where the agent can't:
 *   - VERSION, always (runtimes ask before any agent may exist);
 *   - no agent answer: ADD, CHECK, GC and the rest 11, STATUS 50, and DEL is
 *     journalled (journal.c) for the agent to replay, and succeeds; but a
 *     stdin that is no JSON object is 6 whatever the verb (a retry can't help).
 * Everything is bounded: stdin (RELAY_MAX_STDIN), the connect
 * (agentConnectTimeoutMs), the agent's acknowledgement that it read the
 * request (agentAcceptTimeoutMs: a wedged agent fails fast), then the answer
 * (agentTimeoutMs: a slow agent gets its time), the answer's size. Output is one
 * whole write of the answer or one error object, never a part.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay.h"

static const char *const VERSIONS[] = { "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0" };
#define NVERSIONS (sizeof(VERSIONS) / sizeof(VERSIONS[0]))

static const char *supported(json_t *v) {
  if (!json_is_string(v)) return NULL;
  for (size_t i = 0; i < NVERSIONS; i++)
    if (strcmp(json_string_value(v), VERSIONS[i]) == 0) return VERSIONS[i];
  return NULL;
}

static void say(const char *s) {
  if (relay_write_all(2, s, strlen(s)) != 0) { /* nobody reads stderr: nothing left to tell */ }
}

/* Writes one whole line to stdout; on failure says so on stderr. 0 or -1. */
static int emit(const char *text) {
  size_t n = strlen(text);
  if (relay_write_all(1, text, n) == 0) return 0;
  char m[128];
  snprintf(m, sizeof(m), "berth: stdout: %s; output not delivered\n", relay_errno_name(errno));
  say(m);
  return -1;
}

/* One CNI error object on stdout (common/errors.ts kinds), exit 1. */
static int fail(const char *version, int code, const char *kind, const char *msg, const char *details) {
  char *d = NULL;
  if (asprintf(&d, "%s: %s", kind, details) < 0) d = NULL;
  json_t *o = json_object();
  json_object_set_new(o, "cniVersion", json_string(version));
  json_object_set_new(o, "code", json_integer(code));
  json_object_set_new(o, "msg", json_string(msg));
  /* details may quote input that is not UTF-8; then the kind alone */
  json_t *dv = d ? json_string(d) : NULL;
  json_object_set_new(o, "details", dv ? dv : json_string(kind));
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  free(d);
  if (s) {
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (line) {
      memcpy(line + n, "\n", 2);
      emit(line);
      free(line);
    } else {
      free(s);
    }
  }
  return 1;
}

static long int_field(json_t *root, const char *k, long lo, long hi, long dflt) {
  json_t *v = root ? json_object_get(root, k) : NULL;
  if (!json_is_integer(v)) return dflt;
  json_int_t x = json_integer_value(v);
  return x >= lo && x <= hi ? (long)x : dflt;
}

static const char *path_field(json_t *root, const char *k, const char *dflt) {
  json_t *v = root ? json_object_get(root, k) : NULL;
  if (!json_is_string(v)) return dflt;
  const char *s = json_string_value(v);
  return s[0] == '/' && strlen(s) == json_string_length(v) && strlen(s) < 4000 ? s : dflt;
}

/* The agent's answer: {"code": 0..255, "out": string, "err": string}. 0, or -1 when it is not that. */
static int parse_answer(const buf_t *a, int *code, const char **out, const char **err, json_t **keep) {
  json_t *o = json_loadb(a->p, a->n, 0, NULL);
  *keep = o;
  if (!json_is_object(o)) return -1;
  json_t *c = json_object_get(o, "code"), *so = json_object_get(o, "out"), *se = json_object_get(o, "err");
  if (!json_is_integer(c) || json_integer_value(c) < 0 || json_integer_value(c) > 255) return -1;
  if (!json_is_string(so) || (se && !json_is_string(se))) return -1;
  *code = (int)json_integer_value(c);
  *out = json_string_value(so);
  *err = se ? json_string_value(se) : "";
  return 0;
}

/* When the agent is gone: what each verb answers alone. */
static int agent_down(const struct relay_conf *c, const char *cmd, const char *why) {
  char d[1024];
  if (!c->root) {
    /* No config to find the agent by, and none a retry could ever read: that is the answer. */
    snprintf(d, sizeof(d), "network config: not a JSON object (no agent answered at %s: %s)", c->socket, why);
    return fail(c->version, 6, "Decode", "failed to decode content", d);
  }
  if (strcmp(cmd, "DEL") == 0) {
    char jwhy[512], id[64] = "";
    if (relay_journal_del(c, jwhy, sizeof(jwhy), id, sizeof(id)) == 0) {
      char m[1024];
      snprintf(m, sizeof(m),
               "{\"level\":\"warn\",\"msg\":\"agent unavailable; DEL journalled for replay\",\"plugin\":\"berth\",\"reason\":\"%s\",\"entry\":\"%s\"}\n",
               why, id);
      say(m);
      return 0;
    }
    snprintf(d, sizeof(d), "agent: %s; journal: %s", why, jwhy);
    return fail(c->version, 11, "TryAgainLater", "try again later", d);
  }
  snprintf(d, sizeof(d), "agent unavailable at %s: %s", c->socket, why);
  if (strcmp(cmd, "STATUS") == 0) return fail(c->version, 50, "PluginNotAvailable", "plugin not available", d);
  return fail(c->version, 11, "TryAgainLater", "try again later", d);
}

/* The config fields the relay reads; defaults for what is absent or unusable. */
static void read_conf(struct relay_conf *c, const buf_t *in) {
  c->version = RELAY_LATEST_VERSION;
  c->root = NULL;
  if (in->p) {
    c->root = json_loadb(in->p, in->n, 0, NULL);
    if (!json_is_object(c->root)) {
      json_decref(c->root);
      c->root = NULL;
    }
  }
  const char *v = c->root ? supported(json_object_get(c->root, "cniVersion")) : NULL;
  if (v) c->version = v;
  c->socket = path_field(c->root, "agentSocket", RELAY_DEFAULT_SOCKET);
  c->journal_dir = path_field(c->root, "journalDir", RELAY_DEFAULT_JOURNAL);
  c->timeout_ms = int_field(c->root, "agentTimeoutMs", 100, 600000, RELAY_DEFAULT_TIMEOUT_MS);
  c->connect_ms = int_field(c->root, "agentConnectTimeoutMs", 10, 600000, RELAY_DEFAULT_CONNECT_MS);
  c->accept_ms = int_field(c->root, "agentAcceptTimeoutMs", 50, 60000, RELAY_DEFAULT_ACCEPT_MS);
}

static int version(const struct relay_conf *c) {
  json_t *o = json_pack("{s:s, s:[s,s,s,s,s]}", "cniVersion", c->version, "supportedVersions", VERSIONS[0], VERSIONS[1],
                        VERSIONS[2], VERSIONS[3], VERSIONS[4]);
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  char line[256];
  snprintf(line, sizeof(line), "%s\n", s ? s : "");
  free(s);
  return emit(line) == 0 ? 0 : 1;
}

/* Everything but VERSION: to the agent, or answered alone when no agent answers. */
static int relay(const struct relay_conf *c, const char *cmd, const buf_t *in) {
  /* The runtime's view of the namespace: O_PATH never blocks and opens nothing for I/O. */
  const char *netns = getenv("CNI_NETNS");
  int nsfd = -1, nserr = 0;
  if (netns && *netns) {
    nsfd = open(netns, O_PATH | O_CLOEXEC);
    if (nsfd < 0) nserr = errno;
  }
  buf_t ans;
  char why[512];
  const char *down = relay_exchange(c, cmd, in, nsfd, nserr, &ans, why, sizeof(why));
  int code = 1;
  const char *out = "", *err = "";
  json_t *keep = NULL;
  if (!down && parse_answer(&ans, &code, &out, &err, &keep) != 0) down = "the answer is not a relay answer";
  if (down) {
    code = agent_down(c, cmd, down);
  } else {
    if (*err) say(err);
    if (*out && emit(out) != 0) {
      /* The runtime never saw the result: undo the ADD rather than trust a DEL that may never come. */
      if (strcmp(cmd, "ADD") == 0 && code == 0) {
        buf_t undo;
        if (!relay_exchange(c, "DEL", in, nsfd, nserr, &undo, why, sizeof(why))) free(undo.p);
      }
      code = 1;
    }
  }
  json_decref(keep);
  free(ans.p);
  if (nsfd >= 0) close(nsfd);
  return code;
}

static int run(void) {
  const char *cmd = getenv("CNI_COMMAND");
  if (!cmd) cmd = "";
  buf_t in = { 0 };
  int rerr = 0;
  if (!isatty(0) && relay_read_fd(0, &in, RELAY_MAX_STDIN) != 0) rerr = errno;
  struct relay_conf c;
  read_conf(&c, rerr ? &(buf_t){ 0 } : &in);

  int code;
  char d[128];
  if (strcmp(cmd, "VERSION") == 0) {
    code = version(&c);
  } else if (rerr == EFBIG) {
    snprintf(d, sizeof(d), "network config: more than %u bytes on stdin", RELAY_MAX_STDIN);
    code = fail(c.version, 6, "Decode", "failed to decode content", d);
  } else if (rerr) {
    snprintf(d, sizeof(d), "stdin: %s", strerror(rerr));
    code = fail(c.version, 5, "IO", "I/O failure", d);
  } else {
    code = relay(&c, cmd, &in);
  }
  json_decref(c.root);
  free(in.p);
  return code;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return run();
}
