/*
 * Fault injection for the namespace tests: an LD_PRELOAD library that makes
 * a daemon's fsync(2), fdatasync(2) and syncfs(2) stall or fail on command.
 * tests/netns_faults.rs compiles it with `cc -shared -fPIC` into the test's
 * temporary directory and sets these variables for the daemons it starts
 * (each host gets its own files, so one host can be faulted alone):
 *
 *   REGENT_TEST_FSYNC_STALL_FILE  while this file exists, every call blocks
 *                                 (polling every 5 ms, at most 60 s) before
 *                                 doing the real sync: a disk that stalls.
 *   REGENT_TEST_FSYNC_FAIL_FILE   while this file exists, every call fails
 *                                 with EIO without syncing: a failing disk.
 *   REGENT_TEST_FSYNC_LOG         optional; each faulted call appends
 *                                 `PID CALL stalling` when a stall begins,
 *                                 `PID CALL stalled MS` when it ends, and
 *                                 `PID CALL failed` for a failure, so a test
 *                                 can tell that (and when) its fault was hit.
 *
 * Stall is checked first, then failure: both files make a call that waits
 * and then fails. Unset variables mean no fault. Only the three calls are
 * intercepted; writes, renames and opens go through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int flag_file(const char *var) {
    const char *path = getenv(var);
    struct stat st;
    return path && *path && stat(path, &st) == 0;
}

static void note(const char *call, const char *what, long ms) {
    const char *path = getenv("REGENT_TEST_FSYNC_LOG");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[128];
    int n = ms >= 0
        ? snprintf(line, sizeof line, "%d %s %s %ld\n", (int)getpid(), call, what, ms)
        : snprintf(line, sizeof line, "%d %s %s\n", (int)getpid(), call, what);
    if (n > 0) {
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
    }
    close(fd);
}

/* Applies the faults; returns -1 with errno set if the call must fail. */
static int fault(const char *call) {
    int saved = errno;
    long waited = 0;
    if (flag_file("REGENT_TEST_FSYNC_STALL_FILE")) note(call, "stalling", -1);
    while (waited < 60000 && flag_file("REGENT_TEST_FSYNC_STALL_FILE")) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited += 5;
    }
    if (waited > 0) note(call, "stalled", waited);
    if (flag_file("REGENT_TEST_FSYNC_FAIL_FILE")) {
        note(call, "failed", -1);
        errno = EIO;
        return -1;
    }
    errno = saved;
    return 0;
}

typedef int (*sync_fn)(int);

/* The next definition of `name`: libc's. */
static sync_fn next(const char *name) {
    return (sync_fn)dlsym(RTLD_NEXT, name);
}

int fsync(int fd) {
    static sync_fn real;
    if (!real) real = next("fsync");
    if (fault("fsync") < 0) return -1;
    return real(fd);
}

int fdatasync(int fd) {
    static sync_fn real;
    if (!real) real = next("fdatasync");
    if (fault("fdatasync") < 0) return -1;
    return real(fd);
}

int syncfs(int fd) {
    static sync_fn real;
    if (!real) real = next("syncfs");
    if (fault("syncfs") < 0) return -1;
    return real(fd);
}
