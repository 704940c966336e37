"""The web and the workers never import what is only run by hand: factory_bridge/tools (the
AWS provisioning and template, the factory simulator)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Imports every module of the apps and the project, as the web and the cluster may, except the
# management commands, the migrations, the settings of other environments and the tools.
RUNTIME = """
import importlib, pkgutil, sys
import django

django.setup()
# The web's entry points first, in the order a request loads them.
import nudged.wsgi, nudged.urls, factory_bridge.tasks, nudged.tasks  # noqa

SKIPPED = {"factory_bridge.tools", "nudged.settings"}


def walk(package):
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__, package + "."):
        if info.name in SKIPPED or info.name.rsplit(".", 1)[-1] in ("management", "migrations"):
            continue
        if info.ispkg:
            walk(info.name)
        else:
            importlib.import_module(info.name)


for package in ("nudged", "shop", "inventory", "factory_bridge"):
    walk(package)
print(" ".join(sorted(name for name in sys.modules if name.startswith("factory_bridge.tools"))))
"""


def test_no_runtime_module_imports_the_tools():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "nudged.settings.test"}
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
