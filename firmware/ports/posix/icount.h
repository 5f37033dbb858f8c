/*
 * Guest instruction counts from the mfn_icount QEMU plugin (QEMU linux-user mode).
 *
 * Under qemu-aarch64 the honest unit of time is the instruction: the plugin
 * (firmware/tools/qemu-icount) counts executed guest instructions and writes the
 * count to a host file when the program makes the marker syscall below. Plugin and
 * program both find that file through the environment variable MFN_ICOUNT_FILE, set
 * in QEMU's environment (the guest inherits it); compiler/hil/icount.py builds the
 * command. See docs/icount.md.
 *
 * On a real board or a host, with no plugin, mfn_icount_available() returns 0.
 * Not thread-safe; the counts are exact for a single-threaded program.
 */
#ifndef MFN_ICOUNT_H
#define MFN_ICOUNT_H

#include <stdint.h>

/* An unused syscall number (ASCII "MFN"); kernels and QEMU answer -ENOSYS. */
#define MFN_ICOUNT_MARKER 0x4d464e

/*
 * 1 when MFN_ICOUNT_FILE names the plugin's count file and a marker round trip
 * shows the plugin answering, else 0. The first call does the check (it writes a
 * sentinel into the file, makes the marker syscall and sees the sentinel replaced;
 * a file that is not the plugin's, 16 bytes, is left alone); later calls return the
 * cached answer.
 */
int mfn_icount_available(void);

/*
 * Guest instructions executed so far, including this call's marker syscall
 * instruction. The difference of two reads also contains a small, constant cost of
 * the read itself (see docs/icount.md). Returns 0 when not available or when the
 * plugin did not answer this read (never a stale count).
 */
uint64_t mfn_icount_read(void);

#endif
