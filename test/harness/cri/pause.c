/*
 * The sandbox ("pause") process of the CRI e2e (test/cri-containerd.test.ts):
 * PID 1 of the pod, holding its namespaces. It sleeps (pause(), in its
 * race-free form sigsuspend), reaps any
 * child re-parented to it, and exits 0 on SIGTERM or SIGINT (what
 * StopPodSandbox sends). Built static so the image needs no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) {
  (void)sig;
  stop = 1;
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static void handle(int sig, void (*fn)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(sig, &sa, NULL) != 0) _exit(2);
}

int main(void) {
  /* The signals stay blocked except inside sigsuspend, the atomic form of
   * pause(): a SIGTERM between the check of `stop` and the wait is not lost. */
  sigset_t blocked, waiting;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &blocked, &waiting) != 0) return 2;
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGCHLD);
  handle(SIGTERM, on_stop);
  handle(SIGINT, on_stop);
  handle(SIGCHLD, on_child);
  while (!stop) sigsuspend(&waiting);
  return EXIT_SUCCESS;
}
