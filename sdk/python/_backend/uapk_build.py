"""A PEP 517 build backend of the standard library alone.

``pip install ./sdk/python`` must work offline: pip builds a project in an
isolated environment and would download setuptools into it, so the project
names this in-tree backend (``backend-path``) and requires nothing. It
builds a pure-Python wheel of ``src/uapk_sdk`` and an sdist of the tree;
the metadata is the few fields below, kept in step with pyproject.toml by
the SDK's tests (tests/test_packaging.py).
"""

import base64
import hashlib
import io
import os
import tarfile
import zipfile

NAME = "uapk_sdk"
VERSION = "0.1.0"
SUMMARY = "Python client of uapk-proxy: execute, overrides, approvals, evidence bundles"
REQUIRES_PYTHON = ">=3.9"

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DIST = "%s-%s" % (NAME, VERSION)
_TAG = "py3-none-any"


def _metadata():
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\nVersion: %s\nSummary: %s\nRequires-Python: %s\n"
        % (NAME, VERSION, SUMMARY, REQUIRES_PYTHON)
    ).encode()


def _wheel_file():
    return ("Wheel-Version: 1.0\nGenerator: uapk_build\nRoot-Is-Purelib: true\nTag: %s\n" % _TAG).encode()


def _package_files():
    src = os.path.join(_ROOT, "src")
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(src, NAME)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith((".py", ".typed")):
                full = os.path.join(dirpath, f)
                out.append((os.path.relpath(full, src).replace(os.sep, "/"), full))
    return out


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d\n" % (name, digest, len(data))


def _write_wheel(wheel_directory, files):
    name = "%s-%s.whl" % (_DIST, _TAG)
    info = "%s.dist-info" % _DIST
    files = list(files) + [
        (info + "/METADATA", _metadata()),
        (info + "/WHEEL", _wheel_file()),
        (info + "/top_level.txt", (NAME + "\n").encode()),
    ]
    record = "".join(_record_line(n, d) for n, d in files) + info + "/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d)
        z.writestr(zipfile.ZipInfo(info + "/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), record)
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = []
    for rel, full in _package_files():
        with open(full, "rb") as f:
            files.append((rel, f.read()))
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    pth = (os.path.join(_ROOT, "src") + "\n").encode()
    return _write_wheel(wheel_directory, [("__editable__.%s.pth" % _DIST, pth)])


def build_sdist(sdist_directory, config_settings=None):
    name = _DIST + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as t:
        for top in ("pyproject.toml", "README.md", "_backend", "src", "tests", "examples"):
            path = os.path.join(_ROOT, top)
            if os.path.exists(path):
                t.add(path, arcname=_DIST + "/" + top,
                      filter=lambda ti: None if "__pycache__" in ti.name else ti)
        pkg = io.BytesIO(_metadata())
        ti = tarfile.TarInfo(_DIST + "/PKG-INFO")
        ti.size = len(pkg.getvalue())
        t.addfile(ti, pkg)
    return name
