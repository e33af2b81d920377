{
  "targets": [
    {
      "target_name": "berth_netns",
      "sources": ["berth_netns.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
