/*
 * The DEL journal, written by the relay when no agent answers a DEL. Same
 * files as common/del-journal.ts writes and agent/journal-replay.ts replays:
 * one `del-<id>.json` per attachment in journalDir, written to a dot-prefixed
 * temp file, fsynced, renamed into place, then the directory fsynced. The
 * entry's request is the agent request a DEL carries (common/agent-protocol.ts),
 * built from the config's name and pool and the CNI_* environment.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

#define MAX_ENTRIES 1024
#define MAX_ENTRY_BYTES (64 * 1024)

static uint64_t fnv1a(uint64_t h, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* journalId of common/del-journal.ts: two FNV-1a 64 hashes of pool\0cid\0ifname, as hex. */
void relay_journal_id(const char *pool, const char *cid, const char *ifname, char out[37]) {
  uint64_t h[2] = { 0xcbf29ce484222325ULL, 0x6c62272e07bb0142ULL };
  for (int k = 0; k < 2; k++) {
    h[k] = fnv1a(h[k], pool, strlen(pool) + 1);
    h[k] = fnv1a(h[k], cid, strlen(cid) + 1);
    h[k] = fnv1a(h[k], ifname, strlen(ifname));
  }
  snprintf(out, 37, "del-%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
}

static int mkdirs(const char *dir) {
  char p[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof(p)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char c = p[i];
    p[i] = '\0';
    if (mkdir(p, 0700) != 0 && errno != EEXIST) return -1;
    p[i] = c;
  }
  return 0;
}

static int count_entries(const char *dir, const char *own, int *has_own) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  *has_own = 0;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (strncmp(e->d_name, "del-", 4) != 0 || l < 9 || strcmp(e->d_name + l - 5, ".json") != 0) continue;
    n++;
    if (strncmp(e->d_name, own, strlen(own)) == 0 && l == strlen(own) + 5) *has_own = 1;
  }
  closedir(d);
  return n;
}

/* CNI_ARGS as an object of its well-formed K=V pairs; the agent re-reads nothing else from it. */
static json_t *args_object(const char *s) {
  json_t *o = json_object();
  if (!o || !s) return o;
  char *copy = strdup(s);
  if (!copy) return o;
  char *save = NULL;
  for (char *pair = strtok_r(copy, ";", &save); pair; pair = strtok_r(NULL, ";", &save)) {
    char *eq = strchr(pair, '=');
    if (!eq || eq == pair || strchr(eq + 1, '=')) continue;
    *eq = '\0';
    json_t *v = json_string(eq + 1);
    if (v) json_object_set_new(o, pair, v); /* refuses (and frees v) a key that is not UTF-8 */
  }
  free(copy);
  return o;
}

static const char *str_field(json_t *root, const char *k) {
  json_t *v = root ? json_object_get(root, k) : NULL;
  return json_is_string(v) ? json_string_value(v) : NULL;
}

int relay_journal_del(const struct relay_conf *c, char *why, size_t whylen, char *id_out, size_t idlen) {
  const char *name = str_field(c->root, "name");
  const char *pool = str_field(c->root, "pool");
  const char *cid = getenv("CNI_CONTAINERID");
  const char *ifname = getenv("CNI_IFNAME");
  const char *netns = getenv("CNI_NETNS");
  if (!name || !*name || !pool || !*pool) {
    snprintf(why, whylen, "the config has no network name or pool");
    return -1;
  }
  if (!cid || !*cid || !ifname || !*ifname) {
    snprintf(why, whylen, "CNI_CONTAINERID or CNI_IFNAME missing");
    return -1;
  }
  char id[37];
  relay_journal_id(pool, cid, ifname, id);
  snprintf(id_out, idlen, "%s", id);

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[96];
  snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);

  json_t *req = json_object();
  json_object_set_new(req, "verb", json_string("DEL"));
  json_object_set_new(req, "containerId", json_string(cid));
  json_object_set_new(req, "netns", json_string(netns ? netns : ""));
  json_object_set_new(req, "ifName", json_string(ifname));
  json_object_set_new(req, "args", args_object(getenv("CNI_ARGS")));
  json_object_set_new(req, "network", json_string(name));
  json_object_set_new(req, "pool", json_string(pool));
  json_t *entry = json_object();
  json_object_set_new(entry, "id", json_string(id));
  json_object_set_new(entry, "v", json_integer(1));
  json_object_set_new(entry, "journaledAt", json_string(when));
  json_object_set_new(entry, "request", req);
  /* json_string of text that is not UTF-8 is NULL, and set_new then leaves the key out. */
  if (json_object_size(req) != 7) {
    json_decref(entry);
    snprintf(why, whylen, "the DEL has a value that is not UTF-8");
    return -1;
  }
  char *body = json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(entry);
  if (!body) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  size_t len = strlen(body);
  int rc = -1;
  char final[4200], tmp[4300];
  if (len + 1 > MAX_ENTRY_BYTES) {
    snprintf(why, whylen, "entry of %zu bytes exceeds %d", len + 1, MAX_ENTRY_BYTES);
    goto out;
  }
  if (mkdirs(c->journal_dir) != 0) {
    snprintf(why, whylen, "mkdir %s: %s", c->journal_dir, strerror(errno));
    goto out;
  }
  int has_own = 0;
  int n = count_entries(c->journal_dir, id, &has_own);
  if (n < 0) {
    snprintf(why, whylen, "readdir %s: %s", c->journal_dir, strerror(errno));
    goto out;
  }
  if (n >= MAX_ENTRIES && !has_own) {
    snprintf(why, whylen, "del-journal full: %d entries in %s", n, c->journal_dir);
    goto out;
  }
  unsigned int rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) rnd = (unsigned int)ts.tv_nsec;
  snprintf(final, sizeof(final), "%s/%s.json", c->journal_dir, id);
  snprintf(tmp, sizeof(tmp), "%s/.%s.%d.%08x.tmp", c->journal_dir, id, (int)getpid(), rnd);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(why, whylen, "open %s: %s", tmp, strerror(errno));
    goto out;
  }
  body[len] = '\n';
  int ok = relay_write_all(fd, body, len + 1) == 0 && fsync(fd) == 0;
  int e = errno;
  body[len] = '\0';
  if (close(fd) != 0 && ok) {
    ok = 0;
    e = errno;
  }
  if (!ok || rename(tmp, final) != 0) {
    if (ok) e = errno;
    unlink(tmp);
    snprintf(why, whylen, "write %s: %s", final, strerror(e));
    goto out;
  }
  /* Make the rename durable too; best effort (some filesystems refuse fsync on a directory). */
  int dfd = open(c->journal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  rc = 0;
out:
  free(body);
  return rc;
}
