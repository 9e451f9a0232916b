/*
 * bpf_helpers.h: test stand-in for eBPF for Windows' header of the same name,
 * so that programs written for eBPF for Windows (`#include "bpf_helpers.h"`)
 * build here unchanged. Everything is in ebpf_ntsim.h.
 */
#include "ebpf_ntsim.h"
