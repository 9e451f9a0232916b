// Programs that hand buffers to extension helpers, for the guarded copies
// of ntsim's core (tests/ntsim/tests/ebpf_programs.rs registers the helpers
// with PTR_TO_WRITABLE_MEM / PTR_TO_READABLE_MEM + CONST_SIZE prototypes).
#include "ntsim_test.h"

static uint64_t (*test_ext_fill)(void* buf, uint32_t size) = (void*)0x10004;
static uint64_t (*test_ext_read)(const void* buf, uint32_t size) = (void*)0x10005;

// Fills a 16-byte buffer followed by a sentinel; returns the sum of the
// buffer's bytes, or 0xdead when the sentinel changed.
SEC("sample/fill")
int
fill(test_ctx_t* ctx)
{
    struct
    {
        uint8_t buf[16];
        uint8_t sentinel[8];
    } s;
    for (int i = 0; i < 16; i++) {
        s.buf[i] = 0;
    }
    for (int i = 0; i < 8; i++) {
        s.sentinel[i] = 0x5a;
    }
    test_ext_fill(s.buf, sizeof(s.buf));
    for (int i = 0; i < 8; i++) {
        if (s.sentinel[i] != 0x5a) {
            return 0xdead;
        }
    }
    int sum = 0;
    for (int i = 0; i < 16; i++) {
        sum += s.buf[i];
    }
    return sum;
}

// Hands a read-only buffer.
SEC("sample/read")
int
read(test_ctx_t* ctx)
{
    uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    return (int)test_ext_read(buf, sizeof(buf));
}

// Hands a buffer that runs past the top of the stack frame.
SEC("sample/outside")
int
outside(test_ctx_t* ctx)
{
    uint8_t buf[8] = {0};
    return (int)test_ext_fill(buf, 600);
}
