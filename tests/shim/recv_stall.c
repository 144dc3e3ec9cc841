/*
 * Fault injection for the namespace tests: an LD_PRELOAD library that holds
 * a daemon inside one receive call, once, on command. It models an event loop
 * that is descheduled (or held by a slow syscall) in the middle of a batch of
 * datagrams: datagrams keep arriving in the socket's buffer while it waits,
 * and the daemon reads them all in the same batch once the call returns.
 * tests/netns_faults.rs compiles it with `cc -shared -fPIC`, as it does
 * tests/shim/fsync_fault.c, and sets these variables for one host's daemon:
 *
 *   REGENT_TEST_RECV_STALL_FILE  when the daemon calls recvfrom(2) or
 *                                recvmsg(2) on a datagram socket while this
 *                                file exists, the shim removes the file,
 *                                sleeps for the number of milliseconds written
 *                                in it, and only then makes the real call. One
 *                                file, one stall: write it again for another.
 *   REGENT_TEST_RECV_LOG         optional; the shim appends
 *                                `PID CALL stalling MS REALTIME_NS` when the
 *                                stall begins, `PID CALL stalled MS
 *                                REALTIME_NS` when it ends, and `PID CALL
 *                                batch N` once a call after the stall finds
 *                                the socket empty: N datagrams were read in
 *                                between (those that queued up during the
 *                                stall, and any that came while they were
 *                                read).
 *
 * The daemon receives with recvmsg (nix's `recvmsg`, with MSG_TRUNC);
 * recvfrom is covered too, so a daemon that moves to it is still held.
 * recv(2) and read(2) are left alone: the daemon reads its control
 * socket, hook pipes and wakers with them, and the stall is about datagrams.
 * A file that cannot be read or holds no number stalls 0 ms.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Datagrams read since the last stall ended; -1 when not counting. */
static long counted = -1;

static long long realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void note(const char *call, const char *what, long n) {
    const char *path = getenv("REGENT_TEST_RECV_LOG");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[160];
    int len = snprintf(line, sizeof line, "%d %s %s %ld %lld\n", (int)getpid(), call, what, n,
                       realtime_ns());
    if (len > 0) {
        ssize_t w = write(fd, line, (size_t)len);
        (void)w;
    }
    close(fd);
}

static int is_datagram(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM;
}

/* The stall, if its file is there: claimed by removing the file, so exactly
 * one call stalls per file written. */
static void maybe_stall(const char *call, int fd) {
    const char *path = getenv("REGENT_TEST_RECV_STALL_FILE");
    if (!path || !*path || access(path, F_OK) != 0 || !is_datagram(fd)) return;
    char text[32] = {0};
    int cfd = open(path, O_RDONLY | O_CLOEXEC);
    if (cfd >= 0) {
        ssize_t r = read(cfd, text, sizeof text - 1);
        (void)r;
        close(cfd);
    }
    if (unlink(path) != 0) return; /* another caller claimed it */
    long ms = strtol(text, NULL, 10);
    if (ms < 0) ms = 0;
    note(call, "stalling", ms);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    note(call, "stalled", ms);
    counted = 0;
}

/* Counts what the daemon reads after a stall, until the socket is empty. */
static void count(const char *call, int fd, ssize_t got, int saved_errno) {
    if (counted < 0 || !is_datagram(fd)) return;
    if (got >= 0) {
        counted++;
    } else if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) {
        note(call, "batch", counted);
        counted = -1;
    }
}

typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                 socklen_t *addrlen) {
    static recvfrom_fn real;
    if (!real) real = (recvfrom_fn)dlsym(RTLD_NEXT, "recvfrom");
    int saved = errno;
    maybe_stall("recvfrom", fd);
    errno = saved;
    ssize_t got = real(fd, buf, len, flags, addr, addrlen);
    saved = errno;
    count("recvfrom", fd, got, saved);
    errno = saved;
    return got;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
    static recvmsg_fn real;
    if (!real) real = (recvmsg_fn)dlsym(RTLD_NEXT, "recvmsg");
    int saved = errno;
    maybe_stall("recvmsg", fd);
    errno = saved;
    ssize_t got = real(fd, msg, flags);
    saved = errno;
    count("recvmsg", fd, got, saved);
    errno = saved;
    return got;
}
