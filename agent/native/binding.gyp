{
  "targets": [
    {
      "target_name": "berth_netns",
      "sources": ["berth_netns.c", "berth_dellink.c", "berth_bpf.c", "berth_recvfd.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
