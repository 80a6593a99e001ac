#!/usr/bin/env python3
# check-flatpak.py MANIFEST MESON_BUILD: the Flatpak manifest parses and says what the app needs:
# the app id, the GNOME runtime of GTK 4.8 / libadwaita 1.2, the gt module built with meson and
# the frontend, a command that meson builds, and the finish-args for the daemon's bus name.
# flatpak-builder, when installed, must read it without warnings. Output: TAP.
import json
import shutil
import subprocess
import sys

manifest_path, meson_build = sys.argv[1], sys.argv[2]
results = []


def check(name, cond, detail=""):
    results.append((bool(cond), name, detail))


with open(manifest_path) as f:
    m = json.load(f)
check("app-id is io.github.gtrelay.Gt", m.get("app-id") == "io.github.gtrelay.Gt")
check("GNOME 43 runtime and SDK", m.get("runtime") == "org.gnome.Platform"
      and m.get("sdk") == "org.gnome.Sdk" and m.get("runtime-version") == "43")
with open(meson_build) as f:
    frontend_meson = f.read()
check("command is the app meson builds", m.get("command") == "gt-desktop"
      and "executable('gt-desktop'" in frontend_meson, m.get("command"))
fa = m.get("finish-args", [])
for arg in ["--talk-name=io.github.gtrelay.Gt", "--own-name=io.github.gtrelay.Gt",
            "--share=network", "--socket=wayland", "--socket=fallback-x11", "--share=ipc"]:
    check("finish-args has " + arg, arg in fa)
check("no broad filesystem access", not any(a.startswith("--filesystem=home")
                                             or a == "--filesystem=host" for a in fa))
modules = m.get("modules", [])
names = [mod.get("name") if isinstance(mod, dict) else mod for mod in modules]
check("modules end with gt", names and names[-1] == "gt", names)
check("libyaml is built before gt", "libyaml" in names and names.index("libyaml") < names.index("gt"))
gt = modules[-1] if modules and isinstance(modules[-1], dict) else {}
check("gt builds with meson", gt.get("buildsystem") == "meson")
check("gt builds the frontend", "-Dfrontend=enabled" in gt.get("config-opts", []))
check("gt is built from this tree", any(s.get("type") == "dir" and s.get("path") == ".."
                                        for s in gt.get("sources", [])))
for mod in modules:
    for src in mod.get("sources", []) if isinstance(mod, dict) else []:
        if src.get("type") in ("archive", "file"):
            check("source %s has a sha256" % src.get("url"), "sha256" in src)
        if src.get("type") == "git":
            check("git source %s is pinned" % src.get("url"), "tag" in src or "commit" in src)

builder = shutil.which("flatpak-builder")
if builder:
    p = subprocess.run([builder, "--show-manifest", manifest_path], capture_output=True, text=True)
    check("flatpak-builder reads it without warnings",
          p.returncode == 0 and "WARNING" not in p.stderr, p.stderr.strip())

failed = 0
for i, (ok, name, detail) in enumerate(results, 1):
    print(("ok %d - %s" if ok else "not ok %d - %s") % (i, name))
    if not ok:
        failed = 1
        if detail:
            print("# %s" % (detail,))
print("1..%d" % len(results))
sys.exit(failed)
