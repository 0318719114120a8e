"""Keep freed memory in the process instead of handing it back to the OS after every training step.

glibc's malloc serves large blocks (above 128 kB to 32 MB, adaptive) with ``mmap`` and returns them with
``munmap`` when freed. A training step frees and re-allocates the same activation and gradient tensors (AirNet at
batch 512: ~24 MB each, dozens per step), so every step page-faults its working set back in and the kernel zeroes
every page: 30 million page faults and 66 s of system time in a 10-minute ``configs/strong.yaml`` run on 2 cores.
With ``mmap`` off and trimming off, freed blocks are reused: 0.23 million page faults and 5 s of system time in
the same run (README "Results"; ``benchmarks/step_time.py`` times the step alone, where this VM's drift hides the
difference). Peak memory stays that of the largest step; it is not given back until exit.
This is the same advice PyTorch's CPU performance guide gives (a caching allocator such as jemalloc or tcmalloc),
without a new dependency. Other C libraries (macOS, musl) are left alone.
"""

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc to never ``mmap`` blocks and never trim the heap; True if it took effect."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
