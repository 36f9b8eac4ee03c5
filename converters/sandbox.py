"""No network for the process that unpickles: a seccomp filter the converter installs on itself.

A conversion's untrusted step runs the artifact's code (unpickling runs whatever the pickle says).
Kubernetes has no "no network" switch for a Pod, and a NetworkPolicy needs a CNI that enforces it
(the local node's bridge plugin does not, nor do many clusters'), so the step takes the network
away from itself before it loads anything: a seccomp filter in which `socket()` of any family but
AF_UNIX fails with EACCES, and io_uring (which can open sockets without `socket()`) is absent.
The kernel enforces it on every thread of the process (TSYNC) and on every child; it cannot be
lifted afterwards (a filter can only be added to, and `no_new_privs` keeps setuid programs from
escaping). Nothing here depends on the node, its CNI or its container runtime.

Only x86_64 and aarch64 are known: anywhere else `deny_network` raises, and the conversion fails
closed rather than unpickling with the network.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from serin.converters.errors import ConversionError

# <linux/audit.h>, <linux/seccomp.h>, <linux/filter.h>, <linux/prctl.h>
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# (seccomp, socket, io_uring_setup) syscall numbers per machine.
_SYSCALLS = {"x86_64": (317, 41, 425), "aarch64": (277, 198, 425)}
_X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers
_AF_UNIX = 1
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low 32 bits (little-endian machines only)


class SandboxError(ConversionError):
    """The filter could not be installed: the conversion fails (exit 2) instead of going on."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str) -> list[bytes]:
    """The filter, as BPF instructions. Exposed for the tests, which read it back."""
    if machine not in _AUDIT_ARCH:
        raise SandboxError(f"no network sandbox for machine {machine!r} (known: {', '.join(_AUDIT_ARCH)}): "
                           "refusing to load an untrusted model with the network")
    _, socket_nr, io_uring_setup_nr = _SYSCALLS[machine]
    insns = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),  # another ABI (i386 on x86_64) could bypass the numbers below
        _insn(_LD_W_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64":
        insns += [_insn(_JGE_K, 0, 1, _X32_SYSCALL_BIT),
                  _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    insns += [
        _insn(_JEQ_K, 0, 1, io_uring_setup_nr),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        _insn(_JEQ_K, 0, 4, socket_nr),
        _insn(_LD_W_ABS, 0, 0, _ARG0_LOW),
        _insn(_JEQ_K, 0, 1, _AF_UNIX),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EACCES),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
    ]
    return insns


def _close_inherited_sockets() -> None:
    """A socket handed down by the parent would still work under the filter: none may remain."""
    import stat

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass  # the listing's own descriptor, closed by now


def deny_network() -> None:
    """From now on this process and its children cannot open a network socket. Raises
    SandboxError when the filter cannot be installed: never go on without it."""
    machine = platform.machine()
    insns = program(machine)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    code = b"".join(insns)
    buffer = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(insns), ctypes.cast(buffer, ctypes.c_void_p))
    seccomp_nr = _SYSCALLS[machine][0]
    if libc.syscall(seccomp_nr, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)) != 0:
        raise SandboxError(f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {os.strerror(ctypes.get_errno())}")
    _close_inherited_sockets()
