/* alloc: the benchmark workload. Touches anonymous memory at a fixed rate (or as fast as it
 * can) until the OOM killer ends it, and writes what happened, as it happens, to OUT:
 *
 *   start <t_ns> <pid> <usage> <rate_bps> <chunk>
 *   tick  <t_ns> <usage> <touched>                   at most one per MiB of usage growth
 *   cross <warning|critical> <t_lo> <u_lo> <t_hi> <u_hi>
 *                                                    usage was u_lo < threshold at t_lo (just
 *                                                    before a chunk) and u_hi >= it at t_hi
 *   sig   <USR1|USR2> <t_ns> <usage>                 written by the signal handler itself
 *   nokill <t_ns> <usage>                            touched 4x the limit and still alive
 *   done  <t_ns> <usage> <touched>                   touched STOP_BYTES (when given): exit 0
 *
 * Times are CLOCK_MONOTONIC nanoseconds; usage is the cgroup's memory.current (ground truth: the
 * file oomhero reads), read after every chunk. OUT is opened O_APPEND and every line is one
 * write(2), so everything written survives the SIGKILL. The handler uses only async-signal-safe
 * calls (clock_gettime, pread, write), so a signal handled in the last moment is still recorded.
 *
 * usage: alloc USAGE_FILE LIMIT_BYTES RATE_MIB_PER_S(0 = as fast as possible) CHUNK_BYTES OUT
 *              [WARNING_PCT CRITICAL_PCT [STOP_BYTES]]
 *
 * STOP_BYTES > 0: stop after touching that much and exit 0 (the probe-cost measurement: the
 * allocation throughput is (touched) / (done - start), in a cgroup big enough not to OOM).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int out_fd = -1;
static int sig_usage_fd = -1; /* the handler's own fd: the main loop's offset is not shared */
static const long PAGE = 4096;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Async-signal-safe formatting: snprintf is not on the list. */
static char *put_u64(char *p, uint64_t v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

static uint64_t read_usage_fd(int fd) {
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    uint64_t v = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + (buf[i] - '0');
    return v;
}

static void on_signal(int sig) {
    int saved = errno;
    uint64_t t = now_ns();
    uint64_t usage = read_usage_fd(sig_usage_fd);
    char line[96], *p = line;
    p = put_str(p, sig == SIGUSR1 ? "sig USR1 " : "sig USR2 ");
    p = put_u64(p, t);
    *p++ = ' ';
    p = put_u64(p, usage);
    *p++ = '\n';
    ssize_t ignored = write(out_fd, line, (size_t)(p - line));
    (void)ignored;
    errno = saved;
}

__attribute__((format(printf, 1, 2)))
static void emit(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* The handler writes with write(2) too; both use O_APPEND, so lines never interleave. */
    ssize_t ignored = write(out_fd, line, (size_t)n);
    (void)ignored;
}

static void sleep_until(uint64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 8 && argc != 9) {
        fprintf(stderr,
                "usage: alloc USAGE_FILE LIMIT_BYTES RATE_MIB_PER_S CHUNK_BYTES OUT "
                "[WARNING_PCT CRITICAL_PCT [STOP_BYTES]]\n");
        return 2;
    }
    const char *usage_path = argv[1];
    uint64_t limit = strtoull(argv[2], NULL, 10);
    double rate = strtod(argv[3], NULL) * 1048576.0; /* bytes per second; 0: unpaced */
    uint64_t chunk = strtoull(argv[4], NULL, 10);
    double pct[2] = {75, 90};
    if (argc >= 8) {
        pct[0] = strtod(argv[6], NULL);
        pct[1] = strtod(argv[7], NULL);
    }
    uint64_t stop = argc == 9 ? strtoull(argv[8], NULL, 10) : 0; /* 0: until killed */
    const char *level_name[2] = {"warning", "critical"};
    uint64_t threshold[2] = {(uint64_t)(limit * pct[0] / 100), (uint64_t)(limit * pct[1] / 100)};
    chunk = (chunk + PAGE - 1) / PAGE * PAGE;

    out_fd = open(argv[5], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int usage_fd = open(usage_path, O_RDONLY | O_CLOEXEC);
    sig_usage_fd = open(usage_path, O_RDONLY | O_CLOEXEC);
    if (out_fd < 0 || usage_fd < 0 || sig_usage_fd < 0) {
        perror("alloc: open");
        return 2;
    }

    /* Reserve 4x the limit of address space up front; pages are charged only when touched. */
    uint64_t reserve = 4 * limit;
    char *base = mmap(NULL, reserve, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        perror("alloc: mmap");
        return 2;
    }
    /* One 4 KiB page per touch: a transparent huge page would charge 2 MiB at once. */
    madvise(base, reserve, MADV_NOHUGEPAGE);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    uint64_t usage = read_usage_fd(usage_fd);
    uint64_t start = now_ns();
    emit("start %llu %d %llu %.0f %llu\n", (unsigned long long)start, (int)getpid(),
         (unsigned long long)usage, rate, (unsigned long long)chunk);

    int crossed = 0; /* levels crossed so far (0, 1, 2) */
    uint64_t touched = 0, last_tick_usage = usage;
    while (touched + chunk <= reserve) {
        if (rate > 0) sleep_until(start + (uint64_t)(touched / rate * 1e9));
        uint64_t t_lo = now_ns(), u_lo = usage;
        for (uint64_t off = 0; off < chunk; off += PAGE) base[touched + off] = 1;
        touched += chunk;
        usage = read_usage_fd(usage_fd);
        uint64_t t_hi = now_ns();
        while (crossed < 2 && usage >= threshold[crossed]) {
            emit("cross %s %llu %llu %llu %llu\n", level_name[crossed], (unsigned long long)t_lo,
                 (unsigned long long)u_lo, (unsigned long long)t_hi, (unsigned long long)usage);
            crossed++;
        }
        if (usage >= last_tick_usage + 1048576) {
            emit("tick %llu %llu %llu\n", (unsigned long long)t_hi, (unsigned long long)usage,
                 (unsigned long long)touched);
            last_tick_usage = usage;
        }
        if (stop && touched >= stop) {
            emit("done %llu %llu %llu\n", (unsigned long long)t_hi, (unsigned long long)usage,
                 (unsigned long long)touched);
            return 0;
        }
    }
    emit("nokill %llu %llu\n", (unsigned long long)now_ns(), (unsigned long long)usage);
    return 3;
}
