/*
 * ebpf_structs.h: test stand-in for eBPF for Windows' header of the same name.
 *
 * It declares the cross-platform program and attach type enumerations with
 * exactly the enumerators (names and values) of eBPF for Windows 1.4 and 1.5,
 * so that a project header that declared any of these names again (as
 * ebpf_ntos_hooks.h once did with BPF_PROG_TYPE_PROCESS) fails to compile in
 * the tests as it would beside the real header. Every test program includes
 * it through ebpf_ntsim.h / bpf_helpers.h.
 */
#ifndef EBPF_NTSIM_STANDIN_EBPF_STRUCTS_H
#define EBPF_NTSIM_STANDIN_EBPF_STRUCTS_H

#include "ebpf_windows.h"

enum bpf_prog_type
{
    BPF_PROG_TYPE_UNSPEC,
    BPF_PROG_TYPE_XDP,
    BPF_PROG_TYPE_BIND,
    BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
    BPF_PROG_TYPE_SOCK_OPS,
    BPF_PROG_TYPE_NETEVENT,
    BPF_PROG_TYPE_PROCESS, /* 6 */
    BPF_PROG_TYPE_SAMPLE = 999
};
typedef enum bpf_prog_type bpf_prog_type_t;

enum bpf_link_type
{
    BPF_LINK_TYPE_UNSPEC,
    BPF_LINK_TYPE_PLAIN,
    BPF_LINK_TYPE_CGROUP,
    BPF_LINK_TYPE_XDP,
    BPF_LINK_TYPE_MAX
};

enum bpf_attach_type
{
    BPF_ATTACH_TYPE_UNSPEC,
    BPF_XDP,
    BPF_ATTACH_TYPE_BIND,
    BPF_CGROUP_INET4_CONNECT,
    BPF_CGROUP_INET6_CONNECT,
    BPF_CGROUP_INET4_RECV_ACCEPT,
    BPF_CGROUP_INET6_RECV_ACCEPT,
    BPF_CGROUP_SOCK_OPS,
    BPF_ATTACH_TYPE_SAMPLE,
    BPF_ATTACH_TYPE_NETEVENT = 10,
    BPF_ATTACH_TYPE_PROCESS = 11,
    BPF_CGROUP_INET4_CONNECT_AUTHORIZATION,
    BPF_CGROUP_INET6_CONNECT_AUTHORIZATION,
    BPF_CGROUP_INET4_BIND,
    BPF_CGROUP_INET6_BIND,
    BPF_CGROUP_INET4_LISTEN,
    BPF_CGROUP_INET6_LISTEN,
    __MAX_BPF_ATTACH_TYPE,
};
typedef enum bpf_attach_type bpf_attach_type_t;

#endif
