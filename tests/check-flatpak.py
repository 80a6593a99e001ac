#!/usr/bin/env python3
# check-flatpak.py MANIFEST SOURCE_ROOT: the Flatpak manifest, checked as far as possible without
# Flathub (the runtime cannot be downloaded here, so it cannot be built; see flatpak/README.md):
# - it parses, names the app id used everywhere, the GNOME 43 runtime (GTK 4.8, libadwaita 1.2);
# - every dependency() that meson.build requires is either in the GNOME 43 runtime at a version
#   that meets meson's constraint, or built by a module before gt (no dependency left out);
# - gt is built from this tree with meson, with options that exist in meson_options.txt;
# - sources are pinned (sha256, git tag or commit); finish-args give the bus names and no broad
#   file access; the command, desktop file, metainfo, icons and D-Bus activation file that the
#   export needs exist under the app id;
# - flatpak-builder, when installed, reads it without warnings.
# Output: TAP.
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

manifest_path, root = sys.argv[1], sys.argv[2]
APP_ID = "io.github.gtrelay.Gt"
# pkg-config modules of org.gnome.Sdk//43 (freedesktop-sdk 22.08 below it) that gt uses, with
# their versions there. Checked where Flathub is reachable with
#   flatpak run --command=pkg-config org.gnome.Sdk//43 --modversion NAME
RUNTIME_43 = {
    "glib-2.0": "2.74", "gio-2.0": "2.74", "gio-unix-2.0": "2.74", "gmodule-2.0": "2.74",
    "libsoup-3.0": "3.2", "json-glib-1.0": "1.6", "gnutls": "3.7", "zlib": "1.2",
    "gtk4": "4.8", "libadwaita-1": "1.2", "libsecret-1": "0.20",
}
# pkg-config name → the manifest module that builds it.
MODULE_OF = {"yaml-0.1": "libyaml", "nice": "libnice", "usrsctp": "usrsctp"}
MESON_BUILTIN = {"buildtype", "prefix", "libdir", "werror", "b_lto", "b_ndebug", "optimization"}

results = []


def check(name, cond, detail=""):
    results.append((bool(cond), name, detail))


def version_tuple(text):
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def meets(have, constraint):
    """have ("3.2") against a meson constraint such as ">= 3.2" or "< 0.13"."""
    m = re.match(r"\s*(>=|<=|==|!=|>|<)?\s*([\d.]+)", constraint)
    op, want = (m.group(1) or ">="), version_tuple(m.group(2))
    h = version_tuple(have)
    n = max(len(h), len(want))
    h, want = h + (0,) * (n - len(h)), want + (0,) * (n - len(want))
    return {">=": h >= want, "<=": h <= want, "==": h == want, "!=": h != want,
            ">": h > want, "<": h < want}[op]


def meson_dependencies(text):
    """(name, [constraints], required) of each dependency('NAME', ...) call in text."""
    variables = dict(re.findall(r"^(\w+)\s*=\s*'([^']*)'\s*$", text, re.M))
    deps = []
    for m in re.finditer(r"dependency\(\s*'([^']+)'", text):
        # The call's arguments: up to the matching parenthesis.
        depth, i = 0, m.start() + len("dependency")
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        args = text[m.end():i]
        constraints = []
        v = re.search(r"version\s*:\s*(\[[^\]]*\]|'[^']*'|\w+)", args)
        if v:
            value = v.group(1)
            if value.startswith("["):
                constraints = re.findall(r"'([^']*)'", value)
            elif value.startswith("'"):
                constraints = [value.strip("'")]
            else:
                constraints = [variables.get(value, "")]
        required = re.search(r"required\s*:", args) is None
        deps.append((m.group(1), constraints, required))
    return deps


with open(manifest_path) as f:
    m = json.load(f)
check("app-id is " + APP_ID, m.get("app-id") == APP_ID)
check("GNOME 43 runtime and SDK (GTK 4.8, libadwaita 1.2)",
      m.get("runtime") == "org.gnome.Platform" and m.get("sdk") == "org.gnome.Sdk"
      and m.get("runtime-version") == "43")
with open(os.path.join(root, "src", "frontend", "meson.build")) as f:
    frontend_meson = f.read()
check("command is the app meson builds", m.get("command") == "gt-desktop"
      and "executable('gt-desktop'" in frontend_meson, m.get("command"))

fa = m.get("finish-args", [])
for arg in ["--talk-name=" + APP_ID, "--own-name=" + APP_ID, "--talk-name=org.freedesktop.secrets",
            "--share=network", "--socket=wayland", "--socket=fallback-x11", "--share=ipc"]:
    check("finish-args has " + arg, arg in fa)
check("no broad filesystem or bus access",
      not any(a.startswith("--filesystem=home") or a == "--filesystem=host"
              or a in ("--socket=session-bus", "--socket=system-bus") for a in fa), fa)
check("finish-args are all known flatpak options",
      all(re.match(r"--(share|socket|device|talk-name|own-name|system-talk-name|filesystem|env)="
                   r"[\w.@/:~=-]+$", a) for a in fa), fa)

modules = m.get("modules", [])
check("every module is inline (no separate files to check)",
      all(isinstance(mod, dict) for mod in modules))
modules = [mod for mod in modules if isinstance(mod, dict)]
names = [mod.get("name") for mod in modules]
check("modules end with gt", names and names[-1] == "gt", names)
check("module names are unique", len(set(names)) == len(names), names)
gt = modules[-1] if modules else {}

with open(os.path.join(root, "meson.build")) as f:
    deps = meson_dependencies(f.read())
check("meson.build's dependencies were found", len(deps) >= 10, deps)
for name, constraints, required in deps:
    if not required:
        continue
    if name in RUNTIME_43:
        check("%s %s is in the GNOME 43 runtime (%s)" % (name, " ".join(constraints),
                                                         RUNTIME_43[name]),
              all(meets(RUNTIME_43[name], c) for c in constraints if c))
    else:
        module = MODULE_OF.get(name)
        check("%s (not in the runtime) is built by a module before gt" % name,
              module in names and names.index(module) < names.index("gt"), names)

with open(os.path.join(root, "meson_options.txt")) as f:
    options = set(re.findall(r"option\(\s*'([^']+)'", f.read()))
check("gt builds with meson", gt.get("buildsystem") == "meson")
opts = gt.get("config-opts", [])
check("gt builds the frontend", "-Dfrontend=enabled" in opts)
check("gt's activation file runs the sandboxed daemon, not a host systemd unit",
      "-Ddbus_systemd_service=false" in opts)
for opt in opts:
    key = re.match(r"-D([\w-]+)=", opt)
    check("gt option %s exists" % opt, key and (key.group(1) in options
                                                 or key.group(1) in MESON_BUILTIN), options)
check("gt is built from this tree", any(s.get("type") == "dir" and s.get("path") == ".."
                                        for s in gt.get("sources", [])))
for mod in modules:
    for src in mod.get("sources", []):
        if src.get("type") in ("archive", "file"):
            check("source %s has a sha256" % src.get("url"),
                  re.fullmatch(r"[0-9a-f]{64}", src.get("sha256", "")))
            check("source %s is https" % src.get("url"), src.get("url", "").startswith("https://"))
        if src.get("type") == "git":
            check("git source %s is pinned" % src.get("url"), "tag" in src or "commit" in src)

# What the export needs under the app id: desktop file, metainfo, icons, activation file.
for rel in ["data/%s.desktop.in" % APP_ID, "data/%s.metainfo.xml.in" % APP_ID,
            "data/%s.service.in" % APP_ID,
            "data/icons/hicolor/scalable/apps/%s.svg" % APP_ID,
            "data/icons/hicolor/symbolic/apps/%s-symbolic.svg" % APP_ID]:
    check("%s exists" % rel, os.path.exists(os.path.join(root, rel)))
with open(os.path.join(root, "data", "%s.service.in" % APP_ID)) as f:
    check("the activation file names the app id", "Name=%s\n" % APP_ID in f.read())
with open(os.path.join(root, "data", "%s.desktop.in" % APP_ID)) as f:
    desktop = f.read()
check("the desktop file runs the command and shows the app icon",
      re.search(r"^Exec=%s\b" % re.escape(m.get("command", "?")), desktop, re.M)
      and re.search(r"^Icon=%s$" % re.escape(APP_ID), desktop, re.M))

builder = shutil.which("flatpak-builder")
if builder:
    # It keeps a state directory (.flatpak-builder) in its working directory: a throwaway one.
    with tempfile.TemporaryDirectory() as state:
        p = subprocess.run([builder, "--show-manifest", os.path.abspath(manifest_path)],
                           capture_output=True, text=True, cwd=state)
    check("flatpak-builder reads it without warnings",
          p.returncode == 0 and "WARNING" not in p.stderr, p.stderr.strip())
else:
    results.append((True, "flatpak-builder reads it # SKIP flatpak-builder not installed", ""))

failed = 0
for i, (ok, name, detail) in enumerate(results, 1):
    print(("ok %d - %s" if ok else "not ok %d - %s") % (i, name))
    if not ok:
        failed = 1
        if detail:
            print("# %s" % (detail,))
print("1..%d" % len(results))
sys.exit(failed)
