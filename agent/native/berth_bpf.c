/*
 * The pod-to-pod fast path (agent --fast-path; docs/dataplane.md): two tcx
 * ingress programs, each a map lookup on the IPv4 destination.
 *
 *   ingress, on berth.vxlan:  dst is a local pod -> bpf_redirect_peer into
 *       the pod's interface (map value: ifindex of its host-side veth),
 *       skipping the host's forwarding, berth0 and the veth's backlog.
 *   egress, on each pod's host-side veth:  dst is a remote pod ->
 *       bpf_redirect_neigh out of berth.vxlan with the owning host's
 *       underlay address as next hop (value: vxlan ifindex, next hop).
 *
 * A miss (not IPv4, unknown destination) returns TCX_NEXT: the kernel's
 * normal path, whose routes stay the source of truth. The maps only ever
 * shortcut them, and with the programs gone (agent stopped, link fds
 * closed) everything still works, slower. Keys are the address as it sits
 * in the packet (network byte order).
 *
 * The programs are written out by hand (22 and 31 instructions; 47 for the
 * egress program with the source check, load_egress_checked) rather than
 * compiled, so the build needs no clang.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <node_api.h>

#include "berth_native.h"

/* include/uapi/linux/bpf.h of 6.6+; Debian's headers may predate tcx. */
#define BERTH_BPF_TCX_INGRESS 46
#define BERTH_TCX_NEXT (-1)
/* offsetof(struct __sk_buff, data / data_end) */
#define SKB_DATA 76
#define SKB_DATA_END 80
/* offsetof(struct __sk_buff, ifindex): the device the program runs on */
#define SKB_IFINDEX 40

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD64_IMM(d, i) INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define LDX(sz, d, s, o) INSN(BPF_LDX | BPF_MEM | (sz), d, s, o, 0)
#define STX(sz, d, s, o) INSN(BPF_STX | BPF_MEM | (sz), d, s, o, 0)
#define JGT_REG(d, s, o) INSN(BPF_JMP | BPF_JGT | BPF_X, d, s, o, 0)
#define JNE_IMM(d, i, o) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, o, i)
#define JNE_REG(d, s, o) INSN(BPF_JMP | BPF_JNE | BPF_X, d, s, o, 0)
#define JEQ_IMM(d, i, o) INSN(BPF_JMP | BPF_JEQ | BPF_K, d, 0, o, i)
#define CALL(f) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define LD_MAP_FD(d, fd) INSN(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd), INSN(0, 0, 0, 0, 0)
#define ST_MEM(sz, d, o, i) INSN(BPF_ST | BPF_MEM | (sz), d, 0, o, i)

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static void throw_errno(napi_env env, int err, const char *what, const char *log) {
  char msg[512];
  snprintf(msg, sizeof(msg), "%s: %s%s%.300s", what, strerror(err), log && *log ? ": " : "", log ? log : "");
  napi_throw_error(env, berth_errno_name(err), msg);
}

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R10 = 10 };

/*
 * Shared head of both programs, instructions 0-15: bounds, ETH_P_IP, lookup
 * of the destination; a miss jumps to `miss` (a jump at pc lands on
 * pc + off + 1). On a hit R0 points at the map value.
 */
#define LOOKUP_DST(map_fd, miss)                                                  \
  /* 0 */ MOV64_REG(R6, R1),                                                      \
  /* 1 */ LDX(BPF_W, R2, R6, SKB_DATA),                                           \
  /* 2 */ LDX(BPF_W, R3, R6, SKB_DATA_END),                                       \
  /* 3 */ MOV64_REG(R4, R2),                                                      \
  /* 4 */ ADD64_IMM(R4, 34), /* Ethernet + a minimal IPv4 header */              \
  /* 5 */ JGT_REG(R4, R3, (miss) - 6),                                            \
  /* 6 */ LDX(BPF_H, R5, R2, 12),                                                 \
  /* 7 */ JNE_IMM(R5, 0x0008, (miss) - 8), /* ETH_P_IP: bytes 08 00 read LE */   \
  /* 8 */ LDX(BPF_W, R5, R2, 30), /* IPv4 daddr */                                \
  /* 9 */ STX(BPF_W, R10, R5, -4),                                                \
  /* 10, 11 */ LD_MAP_FD(R1, map_fd),                                             \
  /* 12 */ MOV64_REG(R2, R10),                                                    \
  /* 13 */ ADD64_IMM(R2, -4),                                                     \
  /* 14 */ CALL(BPF_FUNC_map_lookup_elem),                                        \
  /* 15 */ JEQ_IMM(R0, 0, (miss) - 16)

static int load(const struct bpf_insn *insns, size_t n, const char *name, char *log, size_t log_size) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_SCHED_CLS;
  attr.insns = (uint64_t)(uintptr_t)insns;
  attr.insn_cnt = (uint32_t)n;
  attr.license = (uint64_t)(uintptr_t)"Apache-2.0"; /* no GPL-only helpers are used */
  attr.log_buf = (uint64_t)(uintptr_t)log;
  attr.log_size = (uint32_t)log_size;
  attr.log_level = 1;
  strncpy(attr.prog_name, name, sizeof(attr.prog_name) - 1);
  log[0] = 0;
  return (int)sys_bpf(BPF_PROG_LOAD, &attr);
}

static int load_ingress(int map_fd, char *log, size_t log_size) {
  enum { MISS = 20 };
  const struct bpf_insn prog[] = {
    LOOKUP_DST(map_fd, MISS),
    /* 16 */ LDX(BPF_W, R1, R0, 0), /* the host veth's ifindex */
    /* 17 */ MOV64_IMM(R2, 0),
    /* 18 */ CALL(BPF_FUNC_redirect_peer),
    /* 19 */ EXIT(),
    /* 20 */ MOV64_IMM(R0, BERTH_TCX_NEXT),
    /* 21 */ EXIT(),
  };
  return load(prog, sizeof(prog) / sizeof(prog[0]), "berth_in", log, log_size);
}

static int load_egress(int map_fd, char *log, size_t log_size) {
  enum { MISS = 29 };
  const struct bpf_insn prog[] = {
    LOOKUP_DST(map_fd, MISS),
    /* 16 */ LDX(BPF_W, R7, R0, 0), /* berth.vxlan's ifindex */
    /* 17 */ LDX(BPF_W, R8, R0, 4), /* next hop: the owner's underlay address */
    /* struct bpf_redir_neigh at fp-24: nh_family, then the 16-byte address union */
    /* 18 */ ST_MEM(BPF_W, R10, -24, 2 /* AF_INET */),
    /* 19 */ STX(BPF_W, R10, R8, -20),
    /* 20 */ ST_MEM(BPF_DW, R10, -16, 0),
    /* 21 */ ST_MEM(BPF_W, R10, -8, 0),
    /* 22 */ MOV64_REG(R1, R7),
    /* 23 */ MOV64_REG(R2, R10),
    /* 24 */ ADD64_IMM(R2, -24),
    /* 25 */ MOV64_IMM(R3, 20),
    /* 26 */ MOV64_IMM(R4, 0),
    /* 27 */ CALL(BPF_FUNC_redirect_neigh),
    /* 28 */ EXIT(),
    /* 29 */ MOV64_IMM(R0, BERTH_TCX_NEXT),
    /* 30 */ EXIT(),
  };
  return load(prog, sizeof(prog) / sizeof(prog[0]), "berth_out", log, log_size);
}

/*
 * The egress program with the pod source check (isolation on, the default):
 * a packet is redirected only when its IPv4 source is the address the peer
 * map puts behind this very veth. Anything else (a forged source, another
 * pod's address) returns TCX_NEXT and meets the kernel path, where the
 * bridge table's source check drops it (docs/dataplane.md "Isolation"):
 * the shortcut never carries what the slow path would refuse.
 */
static int load_egress_checked(int map_fd, int peer_map_fd, char *log, size_t log_size) {
  enum { MISS = 45 };
  const struct bpf_insn prog[] = {
    LOOKUP_DST(map_fd, MISS),
    /* 16 */ LDX(BPF_W, R7, R0, 0), /* berth.vxlan's ifindex */
    /* 17 */ LDX(BPF_W, R8, R0, 4), /* next hop: the owner's underlay address */
    /* the helper call clobbered R1-R5: bounds again, then the source */
    /* 18 */ LDX(BPF_W, R2, R6, SKB_DATA),
    /* 19 */ LDX(BPF_W, R3, R6, SKB_DATA_END),
    /* 20 */ MOV64_REG(R4, R2),
    /* 21 */ ADD64_IMM(R4, 34),
    /* 22 */ JGT_REG(R4, R3, MISS - 23),
    /* 23 */ LDX(BPF_W, R5, R2, 26), /* IPv4 saddr */
    /* 24 */ STX(BPF_W, R10, R5, -28),
    /* 25, 26 */ LD_MAP_FD(R1, peer_map_fd),
    /* 27 */ MOV64_REG(R2, R10),
    /* 28 */ ADD64_IMM(R2, -28),
    /* 29 */ CALL(BPF_FUNC_map_lookup_elem),
    /* 30 */ JEQ_IMM(R0, 0, MISS - 31),
    /* 31 */ LDX(BPF_W, R1, R0, 0), /* the veth that owns the source address */
    /* 32 */ LDX(BPF_W, R2, R6, SKB_IFINDEX),
    /* 33 */ JNE_REG(R1, R2, MISS - 34),
    /* 34 */ ST_MEM(BPF_W, R10, -24, 2 /* AF_INET */),
    /* 35 */ STX(BPF_W, R10, R8, -20),
    /* 36 */ ST_MEM(BPF_DW, R10, -16, 0),
    /* 37 */ ST_MEM(BPF_W, R10, -8, 0),
    /* 38 */ MOV64_REG(R1, R7),
    /* 39 */ MOV64_REG(R2, R10),
    /* 40 */ ADD64_IMM(R2, -24),
    /* 41 */ MOV64_IMM(R3, 20),
    /* 42 */ MOV64_IMM(R4, 0),
    /* 43 */ CALL(BPF_FUNC_redirect_neigh),
    /* 44 */ EXIT(),
    /* 45 */ MOV64_IMM(R0, BERTH_TCX_NEXT),
    /* 46 */ EXIT(),
  };
  return load(prog, sizeof(prog) / sizeof(prog[0]), "berth_out_chk", log, log_size);
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

static int get_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buf = false;
  return napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf && napi_get_buffer_info(env, v, data, len) == napi_ok;
}

static napi_value int_value(napi_env env, int32_t i) {
  napi_value v;
  napi_create_int32(env, i, &v);
  return v;
}

/* bpfMapCreate(keySize, valueSize, maxEntries) -> fd of a BPF_MAP_TYPE_HASH */
napi_value berth_js_bpf_map_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t k = 0, v = 0, max = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || !get_int(env, argv[0], &k) ||
      !get_int(env, argv[1], &v) || !get_int(env, argv[2], &max) || k <= 0 || v <= 0 || max <= 0) {
    napi_throw_type_error(env, NULL, "bpfMapCreate(keySize, valueSize, maxEntries)");
    return NULL;
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_type = BPF_MAP_TYPE_HASH;
  attr.key_size = (uint32_t)k;
  attr.value_size = (uint32_t)v;
  attr.max_entries = (uint32_t)max;
  int fd = (int)sys_bpf(BPF_MAP_CREATE, &attr);
  if (fd < 0) {
    throw_errno(env, errno, "bpf map create", NULL);
    return NULL;
  }
  return int_value(env, fd);
}

/* The kernel reads key_size/value_size bytes through our pointers: the buffers must be that long. */
static int check_sizes(napi_env env, int fd, size_t klen, size_t vlen, int want_value) {
  struct bpf_map_info info;
  union bpf_attr attr;
  memset(&info, 0, sizeof(info));
  memset(&attr, 0, sizeof(attr));
  attr.info.bpf_fd = (uint32_t)fd;
  attr.info.info_len = sizeof(info);
  attr.info.info = (uint64_t)(uintptr_t)&info;
  if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0) {
    throw_errno(env, errno, "bpf map info", NULL);
    return 0;
  }
  if (klen != info.key_size || (want_value && vlen != info.value_size)) {
    napi_throw_range_error(env, NULL, "key or value size does not match the map");
    return 0;
  }
  return 1;
}

/* bpfMapUpdate(fd, key: Buffer, value: Buffer) */
napi_value berth_js_bpf_map_update(napi_env env, napi_callback_info info) {
  size_t argc = 3, klen = 0, vlen = 0;
  napi_value argv[3];
  int32_t fd = -1;
  void *key = NULL, *value = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || !get_int(env, argv[0], &fd) ||
      !get_bytes(env, argv[1], &key, &klen) || !get_bytes(env, argv[2], &value, &vlen)) {
    napi_throw_type_error(env, NULL, "bpfMapUpdate(fd, key: Buffer, value: Buffer)");
    return NULL;
  }
  if (!check_sizes(env, fd, klen, vlen, 1)) return NULL;
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = (uint32_t)fd;
  attr.key = (uint64_t)(uintptr_t)key;
  attr.value = (uint64_t)(uintptr_t)value;
  attr.flags = BPF_ANY;
  if (sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) != 0) throw_errno(env, errno, "bpf map update", NULL);
  return NULL;
}

/* bpfMapDelete(fd, key: Buffer) -> false when there was no such key */
napi_value berth_js_bpf_map_delete(napi_env env, napi_callback_info info) {
  size_t argc = 2, klen = 0;
  napi_value argv[2], out;
  int32_t fd = -1;
  void *key = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !get_int(env, argv[0], &fd) ||
      !get_bytes(env, argv[1], &key, &klen)) {
    napi_throw_type_error(env, NULL, "bpfMapDelete(fd, key: Buffer)");
    return NULL;
  }
  if (!check_sizes(env, fd, klen, 0, 0)) return NULL;
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = (uint32_t)fd;
  attr.key = (uint64_t)(uintptr_t)key;
  if (sys_bpf(BPF_MAP_DELETE_ELEM, &attr) == 0) {
    napi_get_boolean(env, true, &out);
  } else if (errno == ENOENT) {
    napi_get_boolean(env, false, &out);
  } else {
    throw_errno(env, errno, "bpf map delete", NULL);
    return NULL;
  }
  return out;
}

/*
 * bpfLoadFastPath("ingress" | "egress", mapFd, peerMapFd?) -> program fd; the
 * verifier's log in the error. With peerMapFd, egress checks the source too.
 */
napi_value berth_js_bpf_load_fast_path(napi_env env, napi_callback_info info) {
  size_t argc = 3, len = 0;
  napi_value argv[3];
  char kind[16];
  int32_t map_fd = -1, peer_map_fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_string_utf8(env, argv[0], kind, sizeof(kind), &len) != napi_ok || !get_int(env, argv[1], &map_fd) ||
      (strcmp(kind, "ingress") != 0 && strcmp(kind, "egress") != 0)) {
    napi_throw_type_error(env, NULL, "bpfLoadFastPath('ingress' | 'egress', mapFd)");
    return NULL;
  }
  if (argc >= 3 && !get_int(env, argv[2], &peer_map_fd)) peer_map_fd = -1;
  static char log[16384];
  int fd = strcmp(kind, "ingress") == 0 ? load_ingress(map_fd, log, sizeof(log))
           : peer_map_fd >= 0           ? load_egress_checked(map_fd, peer_map_fd, log, sizeof(log))
                                        : load_egress(map_fd, log, sizeof(log));
  if (fd < 0) {
    throw_errno(env, errno, "bpf prog load", log);
    return NULL;
  }
  return int_value(env, fd);
}

/* tcxAttachIngress(progFd, ifindex) -> link fd (closing it detaches) */
napi_value berth_js_tcx_attach_ingress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t prog_fd = -1, ifindex = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || !get_int(env, argv[0], &prog_fd) ||
      !get_int(env, argv[1], &ifindex) || ifindex <= 0) {
    napi_throw_type_error(env, NULL, "tcxAttachIngress(progFd, ifindex)");
    return NULL;
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.link_create.prog_fd = (uint32_t)prog_fd;
  attr.link_create.target_ifindex = (uint32_t)ifindex;
  attr.link_create.attach_type = BERTH_BPF_TCX_INGRESS;
  int fd = (int)sys_bpf(BPF_LINK_CREATE, &attr);
  if (fd < 0) {
    throw_errno(env, errno, "bpf tcx attach", NULL);
    return NULL;
  }
  return int_value(env, fd);
}
