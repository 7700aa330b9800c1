"""The Bash sandbox's seccomp filter, a classic BPF program for bwrap's `--seccomp`: no
namespaces can be made inside (unshare, setns, clone with a CLONE_NEW* flag), no mounts, no
kernel keyrings, BPF, perf events, modules or kexec; everything else is allowed.

Written by hand, as bwrap takes it (an array of `struct sock_filter`), so that no C library
is needed; the syscall numbers are those of x86_64 and aarch64, the architectures we ship on.
A call of another ABI (i386 or x32 on an x86_64 kernel) is refused whole.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_ABS_W = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
# Offsets in struct seccomp_data: nr, arch, then the arguments from 16 (low word first).
_NR, _ARCH, _ARG0 = 0, 4, 16
# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NEW_FLAGS = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_X32_BIT = 0x40000000

# What is refused with EPERM, by name; clone is checked on its flags, clone3 answers ENOSYS
# (its flags are behind a pointer), so that the C library falls back to clone.
DENIED = (
    "unshare setns mount umount2 pivot_root move_mount open_tree fsopen fsmount fspick"
    " keyctl add_key request_key bpf perf_event_open userfaultfd init_module finit_module"
    " delete_module kexec_load kexec_file_load open_by_handle_at"
).split()

_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "clone": 56, "clone3": 435, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
            "pivot_root": 155, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsmount": 432,
            "fspick": 433, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
            "perf_event_open": 298, "userfaultfd": 323, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "open_by_handle_at": 304,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "clone": 220, "clone3": 435, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
            "pivot_root": 41, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsmount": 432,
            "fspick": 433, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
            "perf_event_open": 241, "userfaultfd": 282, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "open_by_handle_at": 265,
        },
    ),
}  # fmt: skip


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The compiled filter for this machine's architecture, or None where we have no table
    (the sandbox then runs without one, as before)."""
    found = _ARCHES.get(machine or platform.machine())
    if found is None:
        return None
    arch, numbers = found
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    ops = [_op(_LD_ABS_W, _ARCH), _op(_JEQ, arch, jt=1), _op(_RET, eperm), _op(_LD_ABS_W, _NR)]
    if arch == _ARCHES["x86_64"][0]:
        ops += [_op(_JGE, _X32_BIT, jf=1), _op(_RET, eperm)]
    for name in DENIED:
        ops += [_op(_JEQ, numbers[name], jf=1), _op(_RET, eperm)]
    ops += [_op(_JEQ, numbers["clone3"], jf=1), _op(_RET, enosys)]
    # clone: its flags are the first argument (the low word holds every CLONE_NEW* bit).
    ops += [_op(_JEQ, numbers["clone"], jf=3), _op(_LD_ABS_W, _ARG0)]
    ops += [_op(_JSET, CLONE_NEW_FLAGS, jf=1), _op(_RET, eperm)]
    ops += [_op(_RET, _ALLOW)]
    return b"".join(ops)
