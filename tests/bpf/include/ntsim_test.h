/*
 * ntsim_test.h: the context of the host-side test program type the ntsim
 * eBPF tests run programs with, and its two extension helpers.
 */
#ifndef NTSIM_TEST_H
#define NTSIM_TEST_H
#include "ebpf_ntsim.h"

/* Context descriptor: size 40, data @16, end @24, meta absent. */
typedef struct test_ctx
{
    uint64_t id;
    uint64_t value;
    uint8_t* data;
    uint8_t* data_end;
    uint32_t index;
    uint32_t out;
} test_ctx_t;

/* Program-type helpers (ids above 0xFFFF). */
static uint64_t (*test_ext_add)(uint64_t a, uint64_t b) = (void*)0x10001;
/* implicit_context: the core appends the context as a sixth argument. */
static uint64_t (*test_ext_ctx_id)(uint64_t mul) = (void*)0x10002;

#endif
