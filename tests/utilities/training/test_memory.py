"""train.memory_saving: glibc's mmap threshold fixed, so freed tensor memory goes back to the system."""
import subprocess
import sys
import textwrap

from utilities.training.config import TrainConfig
from utilities.training.memory import return_freed_memory


def test_memory_saving_is_off_by_default():
    assert TrainConfig().memory_saving is False


def test_freed_blocks_above_the_threshold_leave_the_resident_set():
    """Two rounds of allocating, touching and freeing 64 blocks of 1 MiB: with the default dynamic threshold
    the second round's blocks stay resident in the heap after free; with the fixed threshold they are unmapped."""
    script = textwrap.dedent("""
        import ctypes, os, sys
        from utilities.training.memory import return_freed_memory
        if sys.argv[1] == "saving":
            assert return_freed_memory()
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        page = os.sysconf("SC_PAGE_SIZE")
        def resident():
            return int(open("/proc/self/statm").read().split()[1]) * page
        for _ in range(2):
            blocks = [libc.malloc(1 << 20) for _ in range(64)]
            for b in blocks:
                ctypes.memset(b, 1, 1 << 20)
            before = resident()
            for b in reversed(blocks[1:]):
                libc.free(ctypes.c_void_p(b))
            freed = before - resident()
        print(freed >> 20)
    """)
    freed = {mode: int(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                      check=True).stdout) for mode in ("default", "saving")}
    assert freed["saving"] >= 60 > freed["default"]


def test_return_freed_memory_reports_success_on_glibc():
    assert return_freed_memory() is True
