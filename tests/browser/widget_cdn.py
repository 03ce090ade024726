"""The CDN files an exported notebook page loads, served from npm packages.

`jupyter nbconvert --to html` writes a page that loads require.js (from
cdnjs), `@jupyter-widgets/html-manager`'s `embed-amd.js` (from unpkg) and,
through the manager, every widget module named in the saved widget state
that the manager does not bundle, such as `anywidget` (from jsDelivr, at
`NAME@RANGE/dist/index.js`). A reader online gets them from those CDNs. The
browser test has no internet, so it serves the same files from the npm
registry's packages:

- `packages(page)`: what the page asks for, as `{URL prefix: npm spec}`
  (a prefix is a package's root on the CDN, or one file's whole URL: the
  cdnjs `require.min.js` is the npm package's `require.js`);
- `fetch(packages, cache)`: `npm pack` each spec and unpack it under
  `cache` (once; delete the folder to take newer releases);
- `Cdn(dirs)`: a playwright route handler that answers those URLs from the
  unpacked packages, lets `file:`, `blob:` and `data:` URLs through, and
  refuses everything else (its `refused` lists what it refused).
"""

from __future__ import annotations

import json
import mimetypes
import pathlib
import re
import shutil
import subprocess
import tarfile
import urllib.parse

# Modules the html manager bundles; any other module of the state comes from the CDN.
BUNDLED = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}
# Where the html manager looks for the others (libembed-amd's default CDN).
MODULE_CDN = "https://cdn.jsdelivr.net/npm/"

_REQUIRE = re.compile(
    r'src="(https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/([\d.]+)/[^"]*)"'
)
# Files a whole-URL prefix stands for, by npm package.
_FILES = {"requirejs": "require.js"}
_MANAGER = re.compile(r"widgetRendererSrc = '(https://[^']*?/((?:@[^/@]+/)?[^/@]+)@([^/']+)/)")
_STATE = re.compile(
    r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>', re.S
)


def packages(page: str) -> dict[str, str]:
    """`{URL prefix: npm spec}` for the widget code an exported page loads."""
    out = {}
    m = _REQUIRE.search(page)
    if m:
        out[m.group(1)] = f"requirejs@{m.group(2)}"
    m = _MANAGER.search(page)
    if not m:
        raise ValueError("the page names no widget manager (`widgetRendererSrc`)")
    out[m.group(1)] = f"{m.group(2)}@{urllib.parse.unquote(m.group(3))}"
    m = _STATE.search(page)
    if not m:
        raise ValueError("the page holds no widget state: save it with the notebook")
    for model in json.loads(m.group(1))["state"].values():
        for kind in ("model", "view"):
            name, version = model.get(f"{kind}_module"), model.get(f"{kind}_module_version")
            if name and name not in BUNDLED:
                out[f"{MODULE_CDN}{name}@{version}/"] = f"{name}@{version}"
    return out


def fetch(specs: dict[str, str], cache: pathlib.Path) -> dict[str, pathlib.Path]:
    """`{URL prefix: unpacked package folder}`, packing what `cache` lacks with npm."""
    npm = shutil.which("npm")
    dirs = {}
    for prefix, spec in specs.items():
        folder = cache / re.sub(r"[^\w.@~^*-]+", "_", spec)
        if not (folder / "package" / "package.json").is_file():
            if not npm:
                raise RuntimeError(
                    f"npm is needed to fetch {spec} (the page's {prefix}): "
                    "`make test-browser` installs it (Debian's `npm`)"
                )
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                [npm, "pack", spec, "--json", "--pack-destination", str(folder)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode:
                raise RuntimeError(f"`npm pack {spec}` failed:\n{done.stderr[-2000:]}")
            tgz = folder / json.loads(done.stdout)[0]["filename"]
            with tarfile.open(tgz) as tar:
                tar.extractall(folder, filter="data")
            tgz.unlink()
        name = spec.rsplit("@", 1)[0]
        dirs[prefix] = folder / "package" / _FILES.get(name, "")
    return dirs


class Cdn:
    """A playwright route handler: the CDN URLs from the packages, nothing else off the machine."""

    def __init__(self, dirs: dict[str, pathlib.Path]):
        self.dirs = dirs
        self.served: list[str] = []
        self.refused: list[str] = []

    def file(self, url: str) -> pathlib.Path | None:
        url = urllib.parse.unquote(url)
        for prefix, where in self.dirs.items():
            if url == prefix and where.is_file():
                return where
            if prefix.endswith("/") and url.startswith(prefix):
                rest = urllib.parse.urlsplit(url).path[len(urllib.parse.urlsplit(prefix).path) :]
                path = where / rest
                return path if path.is_file() else None
        return None

    def __call__(self, route):
        url = route.request.url
        if url.startswith(("file:", "blob:", "data:")):
            route.continue_()
            return
        path = self.file(url)
        if path is None:
            self.refused.append(url)
            route.abort()
            return
        self.served.append(url)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        route.fulfill(path=str(path), content_type=kind)
