/*
 * mfn_icount: a QEMU TCG plugin that counts executed guest instructions and hands
 * the count to the guest program on request (QEMU linux-user mode).
 *
 *   MFN_ICOUNT_FILE=/tmp/count.bin qemu-aarch64 -cpu cortex-a72 \
 *       -L /usr/aarch64-linux-gnu -plugin ./libmfn_icount.so ./prog
 *
 * The count file is named by the environment variable MFN_ICOUNT_FILE, which the
 * guest inherits from QEMU and reads too, or by the plugin argument out=PATH
 * (-plugin ./libmfn_icount.so,out=PATH; the guest then needs -E MFN_ICOUNT_FILE=PATH).
 * The argument is "out", not "file": in QEMU's -plugin option "file" is the key of
 * the plugin's own path, and QEMU keeps it for itself. The environment form has no
 * comma in the command line, so it survives wrappers such as socat's EXEC address,
 * where a comma starts an option.
 *
 * Counting: every translated block gets an inline "add the block's instruction
 * count to a global uint64_t" op at its entry, so the counter is exact for any
 * block that runs to its end (in user mode a block ends at a branch, a syscall or
 * an exception, so it always does for a single-threaded guest).
 *
 * Reading: the guest makes syscall MFN_ICOUNT_MARKER (an unused number; the
 * kernel, or QEMU, answers -ENOSYS). The plugin's syscall-entry callback runs before
 * QEMU handles the syscall and writes the counter, 8 bytes little endian, at offset
 * 0 of the count file. The guest shares the host's file
 * system, so it preads those 8 bytes back after the syscall returns. The count
 * includes every instruction up to and including the marker's svc. At exit the
 * plugin writes the total at offset 8.
 *
 * Limits: one global counter, updated without atomics: exact for a single-threaded
 * guest only (QEMU 7.2's inline ops have no per-vCPU form).
 *
 * No QEMU header is needed: the few API declarations below were written for QEMU
 * 7.2, plugin API version 1 (the versions it accepts: min 0, cur 1).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- QEMU 7.2 plugin API (version 1): only what this plugin uses ------------- */

#define MFN_QEMU_PLUGIN_API_VERSION 1
#define MFN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

/* Passed to qemu_plugin_install. Only the leading fields are read here. */
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    } u;
} qemu_info_t;

struct qemu_plugin_tb; /* opaque translation block handle */

enum qemu_plugin_op {
    QEMU_PLUGIN_INLINE_ADD_U64 = 0,
};

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                                              uint64_t a6, uint64_t a7, uint64_t a8);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

/* Resolved at load time from the QEMU executable. */
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

/* QEMU checks this before calling qemu_plugin_install. */
MFN_EXPORT int qemu_plugin_version = MFN_QEMU_PLUGIN_API_VERSION;

/* ---- the plugin ------------------------------------------------------------- */

/* Must match MFN_ICOUNT_MARKER in firmware/ports/posix/icount.h. */
#define MFN_ICOUNT_MARKER 0x4d464eLL

static uint64_t insn_count; /* the target of every block's inline add */
static char *out_path;

/*
 * Errors go to stderr (QEMU's, shared with the guest): qemu_plugin_outs() only
 * prints under "-d plugin", so a failed install would otherwise be silent.
 */
static void say(const char *fmt, const char *arg)
{
    fprintf(stderr, fmt, arg);
    fflush(stderr);
}

/* Write value, little endian, at offset in out_path. Returns 0 or an errno. */
static int put_u64(uint64_t value, off_t offset)
{
    unsigned char bytes[8];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(value >> (8 * i));
    }
    /*
     * Opened per write, not kept open: the guest shares this process's descriptor
     * table and could close a descriptor of ours. Markers are rare (one pair per
     * timed region), so the open costs nothing that matters.
     */
    int fd = open(out_path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int err = 0;
    ssize_t n = pwrite(fd, bytes, sizeof bytes, offset);
    if (n != (ssize_t)sizeof bytes) {
        err = n < 0 ? errno : EIO;
    }
    if (close(fd) != 0 && err == 0) {
        err = errno;
    }
    return err;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, (uint64_t)n);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu_index, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num != MFN_ICOUNT_MARKER) {
        return;
    }
    int err = put_u64(insn_count, 0);
    if (err != 0) {
        /* The guest then reads back the sentinel it wrote and knows the read failed. */
        say("mfn_icount: cannot write the count: %s\n", strerror(err));
    }
}

static void on_qemu_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id, (void)userdata;
    (void)put_u64(insn_count, 8);
}

MFN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    if (info->system_emulation) {
        say("mfn_icount: only for QEMU user mode (qemu-<arch>), not %s\n", "qemu-system-*");
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0 && argv[i][4] != '\0' && out_path == NULL) {
            out_path = argv[i] + 4;
        } else {
            say("mfn_icount: bad or repeated argument '%s' (the only one is out=PATH)\n", argv[i]);
            return -1;
        }
    }
    if (out_path == NULL) {
        out_path = getenv("MFN_ICOUNT_FILE");
    }
    if (out_path == NULL || out_path[0] == '\0') {
        say("mfn_icount: no count file: set %s or pass -plugin libmfn_icount.so,out=PATH\n", "MFN_ICOUNT_FILE");
        return -1;
    }
    out_path = strdup(out_path); /* neither argv nor the environment is ours to keep */
    if (out_path == NULL) {
        return -1;
    }
    /* Create the file with 16 zero bytes: [0,8) count at the last marker, [8,16) total at exit. */
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        say("mfn_icount: cannot create the count file: %s\n", strerror(errno));
        return -1;
    }
    static const unsigned char zeros[16];
    ssize_t n = write(fd, zeros, sizeof zeros);
    int werr = errno;
    close(fd);
    if (n != (ssize_t)sizeof zeros) {
        say("mfn_icount: cannot write the count file: %s\n", n < 0 ? strerror(werr) : "short write");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}
