"""runs/memory.py: a large block freed is reused by the next allocation instead of being page-faulted back in.
(In a 10-minute strong.yaml run: 30 million page faults and 66 s of system time before, 0.23 million and 5 s after.)"""

import subprocess
import sys

import pytest

PROBE = """
import ctypes, resource, sys
from fashion_mnist_lightning.runs.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size = 24_000_000  # bytes: AirNet's largest activation at batch 512 in bf16
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # touched, as a tensor's values are
libc.free(block)  # the end of a training step
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)  # the next step
ctypes.memset(block, 1, size)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_block_is_reused_without_page_faults():
    assert page_faults("default") > 3_000  # glibc: a fresh mmap, the block's 4 kB pages faulted in again
    assert page_faults("keep") < 100  # kept in the heap: the same pages, still mapped
