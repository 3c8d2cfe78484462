"""The oldest releases CI installs (constraints-oldest.txt) are exactly setup.cfg's lower bounds, and the installed
releases lie inside the supported ranges."""

from __future__ import annotations

import configparser
import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RANGED = ("transformers", "peft", "accelerate", "huggingface_hub")


def _install_requires() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    return {Requirement(line).name.replace("-", "_"): Requirement(line) for line in lines}


def _oldest_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints-oldest.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line.strip())
        if match:
            pins[match.group(1).replace("-", "_")] = match.group(2)
    return pins


def test_oldest_constraints_are_the_lower_bounds() -> None:
    requires, pins = _install_requires(), _oldest_pins()
    for name in RANGED:
        lower = [spec.version for spec in requires[name].specifier if spec.operator == ">="]
        assert lower, f"setup.cfg gives {name} no lower bound"
        assert Version(pins[name]) == Version(lower[0]), (name, pins[name], lower[0])
        assert Version(pins[name]) in requires[name].specifier, name


def test_installed_versions_are_supported() -> None:
    requires = _install_requires()
    for name in RANGED:
        installed = version(name)
        assert Version(installed) in requires[name].specifier, f"{name} {installed} is outside {requires[name]}"


def test_installed_transformers_accepts_the_installed_peft() -> None:
    """transformers refuses its PEFT integration (`model.load_adapter`, ...) below its own minimum PEFT: 5.24 asks for
    PEFT 0.22, beyond the 0.21 series whose private APIs rvc-peft is checked against, hence transformers < 5.24."""
    from transformers.integrations import peft as transformers_peft

    minimum = getattr(transformers_peft, "MIN_PEFT_VERSION", "0")
    assert Version(version("peft")) >= Version(minimum), (
        f"transformers {version('transformers')} needs peft >= {minimum}, installed {version('peft')}")
