"""Install detectron2 v0.6 as pure Python from the PyPI sdist ``pb1-detectron2==0.6``.

The sdist is upstream detectron2 v0.6 without ``detectron2/layers/csrc``, so a plain
``pip install`` fails. This script downloads it, applies the compatibility fixes below (no C++
extension; guarded ``_C`` imports; Pillow 10 and numpy 2 renames; no ``pkg_resources``) and
installs the result into the running interpreter.
It is idempotent: when the patched package already imports, it does nothing.

On a machine that has a CUDA toolchain and wants the C++ ops, install upstream detectron2
instead; the project only uses ops that torchvision provides.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
MARKER = "# patched-for-pure-python"

_GUARDED_C_IMPORT = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # pure-Python install: no compiled ops\n"
    "    _C = None\n"
)


def _already_installed() -> bool:
    probe = (
        "import detectron2, detectron2.modeling, detectron2.evaluation.lvis_evaluation, "
        "pathlib, sys; "
        "src = pathlib.Path(detectron2.__file__).with_name('model_zoo') / 'model_zoo.py'; "
        f"sys.exit(0 if {MARKER!r} in src.read_text() else 1)"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def _sub(path: Path, pattern: str, replacement: str, *, count: int = 0, regex: bool = False) -> None:
    text = path.read_text()
    new = re.sub(pattern, replacement, text, count=count) if regex else text.replace(pattern, replacement)
    path.write_text(new)


def patch_source(root: Path) -> None:
    """Apply the pure-Python compatibility fixes to an extracted sdist at ``root``."""
    pkg = root / "detectron2"

    # setup.py: no extension when csrc is missing; ship the model-zoo configs; drop the
    # black==21.4b2 pin (it does not install with current click and is only used for
    # pretty-printing LazyConfig).
    setup_py = root / "setup.py"
    _sub(setup_py, "def get_extensions():\n", "def get_extensions():\n    if not path.isdir(path.join(path.dirname(path.abspath(__file__)), 'detectron2', 'layers', 'csrc')):\n        return []\n")
    _sub(setup_py, 'source_configs_dir = path.join(path.dirname(path.realpath(__file__)), "configs")',
         'source_configs_dir = path.join(path.dirname(path.realpath(__file__)), "configs")\n'
         '    if not path.exists(source_configs_dir):\n'
         '        here = path.join(path.dirname(path.realpath(__file__)), "detectron2", "model_zoo")\n'
         '        return [path.relpath(p, here) for p in glob.glob(path.join(here, "configs", "**", "*.yaml"), recursive=True)\n'
         '                + glob.glob(path.join(here, "configs", "**", "*.py"), recursive=True)]')
    _sub(setup_py, '"black==21.4b2",', "")
    if "ext_modules=get_extensions()" not in setup_py.read_text():
        _sub(setup_py, "package_data={", "ext_modules=get_extensions(),\n    package_data={")

    for rel in ("layers/deform_conv.py", "layers/rotated_boxes.py", "layers/roi_align_rotated.py",
                "evaluation/fast_eval_api.py"):
        _sub(pkg / rel, "from detectron2 import _C\n", _GUARDED_C_IMPORT, count=1, regex=False)

    # The "fast" COCO evaluator needs _C; fall back to pycocotools when it is missing.
    coco_eval = pkg / "evaluation" / "coco_evaluation.py"
    _sub(coco_eval, "from detectron2.evaluation.fast_eval_api import COCOeval_opt",
         "from detectron2.evaluation.fast_eval_api import COCOeval_opt, _C as _FAST_EVAL_C")
    _sub(coco_eval, "(COCOeval_opt if use_fast_impl else COCOeval)",
         "(COCOeval_opt if use_fast_impl and _FAST_EVAL_C is not None else COCOeval)")

    _sub(pkg / "data" / "transforms" / "transform.py", "Image.LINEAR", "Image.BILINEAR")

    # numpy 2 removed the aliases np.int / np.float / np.str / np.bool.
    for py in pkg.rglob("*.py"):
        text = py.read_text()
        new = re.sub(r"\bnp\.(int|float|str|bool)\b(?![\w.])", lambda m: {"bool": "bool"}.get(m.group(1), m.group(1)), text)
        if new != text:
            py.write_text(new)

    zoo = pkg / "model_zoo" / "model_zoo.py"
    _sub(zoo, "import pkg_resources\n", f"{MARKER}\n")
    _sub(zoo, 'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
         'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)')
    if "pkg_resources" in zoo.read_text():
        raise RuntimeError(f"{zoo}: could not remove pkg_resources; the sdist differs from v0.6")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if already patched")
    parser.add_argument("--wheel-dir", type=Path, default=None,
                        help="build a wheel of the patched package into this folder instead of installing it "
                             "(pure Python: it installs on any Python >= 3.7, e.g. a GPU machine's)")
    args = parser.parse_args(argv)
    if args.wheel_dir is None and not args.force and _already_installed():
        print("detectron2 (patched pure-Python v0.6) already installed")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", SDIST, "-d", str(tmpdir)], check=True)
        (archive,) = tmpdir.glob("pb1-detectron2-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmpdir, filter="data")
        (root,) = [p for p in tmpdir.iterdir() if p.is_dir()]
        patch_source(root)
        if args.wheel_dir is not None:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w",
                            str(args.wheel_dir), str(root)], check=True)
            print(f"detectron2 (patched pure-Python v0.6) wheel -> {args.wheel_dir}")
            return 0
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", str(root)],
                       check=True)
    if not _already_installed():
        raise SystemExit("detectron2 installed but does not import; see the output above")
    print("detectron2 (patched pure-Python v0.6) installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
