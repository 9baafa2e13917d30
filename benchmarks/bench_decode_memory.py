"""Peak memory of decoding the worst images deepfeat still accepts at its default pixel limit (issue 11).

Each image is written at the largest size the default limit accepts (9459 x 9459 = 89,472,681 pixels <= 89,478,485)
and decoded by ``deepfeat.data.images.load_image`` in a fresh subprocess; the peak resident set size of that
subprocess (``ru_maxrss``) is printed beside the size of the decoded 8-bit RGB result. A uniform image keeps the
files small; decoding cost does not depend on the content. Run: ``python benchmarks/bench_decode_memory.py``.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SIDE = 9459  # 9459^2 = 89,472,681 pixels, just under Pillow's / deepfeat's default limit of 89,478,485
KINDS = {"16-bit grey PNG (I;16)": ("I;16", 40000), "8-bit RGB PNG": ("RGB", (200, 120, 90)),
         "8-bit RGBA PNG (alpha over white)": ("RGBA", (200, 120, 90, 128)), "8-bit grey PNG": ("L", 128)}

MAKE = ("import sys; from PIL import Image; Image.new(sys.argv[2], (int(sys.argv[3]),) * 2, eval(sys.argv[4]))"
        ".save(sys.argv[1], compress_level=1)")
DECODE = ("import resource, sys; from deepfeat.data.images import load_image; im = load_image(sys.argv[1]); "
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, im.size[0] * im.size[1] * 3 // 2**20)")
BASE = "import resource, deepfeat.data.images; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"


def main():
    tmp = Path(tempfile.mkdtemp(prefix="decode-mem-"))
    base = int(subprocess.run([sys.executable, "-c", BASE], capture_output=True, text=True, check=True).stdout)
    print(f"interpreter + deepfeat.data.images imported: {base} MiB peak RSS")
    print(f"{'image':36s} {'file':>9s} {'peak RSS':>9s} {'RGB out':>8s} {'peak/out':>8s}")
    for name, (mode, colour) in KINDS.items():
        path = tmp / f"{mode.replace(';', '_')}.png"
        subprocess.run([sys.executable, "-c", MAKE, str(path), mode, str(SIDE), repr(colour)], check=True)
        out = subprocess.run([sys.executable, "-c", DECODE, str(path)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name:36s} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        peak, rgb = map(int, out.stdout.split())
        print(f"{name:36s} {path.stat().st_size / 2**20:7.1f}MB {peak:6d}MiB {rgb:6d}MiB {peak / rgb:8.2f}")
        path.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
