"""The seccomp filter for the bubblewrap runtime, assembled by hand as classic BPF.

bwrap's ``--seccomp FD`` loads a compiled program (an array of ``struct sock_filter``) just
before it runs the command. Ours is a deny-list in the spirit of Flatpak's: syscalls that
reach kernel attack surface an interpreter never needs (namespaces, mounts, ptrace, bpf,
keyrings, modules, io_uring, ...) fail with EPERM; ``clone3`` fails with ENOSYS so that libc
falls back to ``clone``, whose namespace flags the filter can inspect; a foreign syscall ABI
(x32, or another architecture) kills the process. Syscall numbers were checked against
libseccomp's tables (``seccomp.resolve_syscall``).
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data offsets; args are 64-bit, little-endian, so +0 is the low half.
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24

_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000

_CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_TTY_INJECTION = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at", "keyctl",
    "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl",
    "lookup_dcookie", "vhangup", "sethostname", "setdomainname", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "migrate_pages", "move_pages", "mbind",
)  # fmt: skip
"""Syscalls that fail with EPERM."""

_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "keyctl": 250, "add_key": 248,
    "request_key": 249, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
    "syslog": 103, "quotactl": 179, "lookup_dcookie": 212, "vhangup": 153,
    "sethostname": 170, "setdomainname": 171, "settimeofday": 164, "clock_settime": 227,
    "clock_adjtime": 305, "adjtimex": 159, "migrate_pages": 256, "move_pages": 279,
    "mbind": 237,
    "clone": 56, "clone3": 435, "ioctl": 16,
    # legacy x86-only ones
    "iopl": 172, "ioperm": 173, "uselib": 134, "_sysctl": 156, "nfsservctl": 180,
}  # fmt: skip

_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "pidfd_getfd": 438, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
    "unshare": 97, "setns": 268, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "open_by_handle_at": 265, "name_to_handle_at": 264, "keyctl": 219, "add_key": 217,
    "request_key": 218, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
    "delete_module": 106, "acct": 89, "swapon": 224, "swapoff": 225, "reboot": 142,
    "syslog": 116, "quotactl": 60, "lookup_dcookie": 18, "vhangup": 58,
    "sethostname": 161, "setdomainname": 162, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171, "migrate_pages": 238, "move_pages": 239,
    "mbind": 235,
    "clone": 220, "clone3": 435, "ioctl": 29,
    "nfsservctl": 42,
}  # fmt: skip

# machine -> (AUDIT_ARCH_*, syscall table, lowest number of a foreign ABI sharing the arch)
_ARCHES: dict[str, tuple[int, dict[str, int], int | None]] = {
    "x86_64": (0xC000003E, _X86_64, 0x40000000),  # x32 syscalls have bit 30 set
    "aarch64": (0xC00000B7, _AARCH64, None),
}
_LEGACY = {"iopl", "ioperm", "uselib", "_sysctl", "nfsservctl"}


def supported(machine: str | None = None) -> bool:
    return (machine or platform.machine()) in _ARCHES


def build_filter(machine: str | None = None) -> bytes:
    """The filter program for ``machine`` (default: this one), ready for ``--seccomp``."""
    arch, table, foreign_abi = _ARCHES[machine or platform.machine()]
    denied = [table[name] for name in DENIED] + [table[n] for n in _LEGACY if n in table]
    prog = _Program()
    prog.load(_ARCH)
    prog.jump(_JEQ, arch, "nr", "kill")
    prog.label("nr")
    prog.load(_NR)
    if foreign_abi is not None:
        prog.jump(_JGE, foreign_abi, "kill", "checks")
    prog.label("checks")
    for number in denied:
        prog.jump(_JEQ, number, "eperm", None)
    prog.jump(_JEQ, table["clone3"], "enosys", None)
    prog.jump(_JEQ, table["clone"], "clone", None)
    prog.jump(_JEQ, table["ioctl"], "ioctl", "allow")
    prog.label("clone")
    prog.load(_ARG0)
    prog.jump(_JSET, _CLONE_NS_FLAGS, "eperm", "allow")
    prog.label("ioctl")
    prog.load(_ARG1)
    for request in _TTY_INJECTION:
        prog.jump(_JEQ, request, "eperm", None)
    prog.label("allow")
    prog.ret(_ALLOW)
    prog.label("eperm")
    prog.ret(_ERRNO | errno.EPERM)
    prog.label("enosys")
    prog.ret(_ERRNO | errno.ENOSYS)
    prog.label("kill")
    prog.ret(_KILL_PROCESS)
    return prog.assemble()


class _Program:
    """A tiny BPF assembler: instructions with symbolic jump targets (None: next one)."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, str | None, str | None]] = []
        self.labels: dict[str, int] = {}

    def load(self, offset: int) -> None:
        self.code.append((_LD_ABS, offset, None, None))

    def jump(self, op: int, k: int, true: str | None, false: str | None) -> None:
        self.code.append((op, k, true, false))

    def ret(self, value: int) -> None:
        self.code.append((_RET, value, None, None))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (op, k, true, false) in enumerate(self.code):
            jt = jf = 0
            if op in (_JEQ, _JGE, _JSET):
                jt, jf = (self._offset(index, target) for target in (true, false))
            out += struct.pack("=HBBI", op, jt, jf, k)
        return bytes(out)

    def _offset(self, index: int, target: str | None) -> int:
        if target is None:
            return 0
        offset = self.labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {target} out of range ({offset})")
        return offset
