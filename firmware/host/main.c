/*
 * x86_64 host runner: reads raw RGB images (HWC, uint8) from stdin, one after another,
 * and writes each embedding's raw int8/int16 values to stdout. It is the simplest
 * device program: the generated model and the portable kernels, nothing else.
 */
#include <stdio.h>

#include "model.h"

static uint8_t pixels[MFN_INPUT_BYTES];
static uint8_t embedding[MFN_OUTPUT_BYTES];

int main(void)
{
    for (;;) {
        const size_t got = fread(pixels, 1, sizeof pixels, stdin);
        if (got == 0 && feof(stdin)) {
            return 0;
        }
        if (got != sizeof pixels) {
            fprintf(stderr, "mfn-host: truncated image (%lu of %lu bytes)\n", (unsigned long)got,
                    (unsigned long)sizeof pixels);
            return 2;
        }
        mfn_model_run(pixels, embedding, NULL, NULL);
        if (fwrite(embedding, 1, sizeof embedding, stdout) != sizeof embedding) {
            return 5;
        }
        fflush(stdout);
    }
}
