"""The in-tree build backend's metadata agrees with pyproject.toml, and it
builds a wheel holding the package."""

import os
import sys
import tempfile
import unittest
import zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "_backend"))
sys.path.insert(0, os.path.join(ROOT, "src"))

import uapk_build  # noqa: E402
import uapk_sdk  # noqa: E402


class PackagingTest(unittest.TestCase):
    def test_versions_agree(self):
        with open(os.path.join(ROOT, "pyproject.toml")) as f:
            text = f.read()
        self.assertIn('version = "%s"' % uapk_build.VERSION, text)
        self.assertIn('name = "%s"' % uapk_build.NAME, text)
        self.assertEqual(uapk_sdk.__version__, uapk_build.VERSION)

    def test_wheel(self):
        with tempfile.TemporaryDirectory() as d:
            name = uapk_build.build_wheel(d)
            with zipfile.ZipFile(os.path.join(d, name)) as z:
                names = set(z.namelist())
        for want in ("uapk_sdk/__init__.py", "uapk_sdk/client.py", "uapk_sdk/py.typed",
                     "uapk_sdk-%s.dist-info/RECORD" % uapk_build.VERSION):
            self.assertIn(want, names)


if __name__ == "__main__":
    unittest.main()
