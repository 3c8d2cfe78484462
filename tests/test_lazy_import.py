"""`import rvc_peft` is lazy, yet the RVC LoRA tuner is installed before PEFT meets an RVC model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import rvc_peft

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_public_names_and_dir():
    assert set(rvc_peft.__all__) <= set(dir(rvc_peft))
    for name in rvc_peft.__all__:
        assert getattr(rvc_peft, name).__name__ == name
    assert rvc_peft.checkpoints.resolve_model_file  # subpackages as attributes, as with the old eager import
    try:
        rvc_peft.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_first_public_name_installs_the_tuner_in_a_fresh_process():
    out = _python("""
        import sys
        import rvc_peft
        before = sorted(m for m in ("torch", "peft", "rvc_peft.tuners") if m in sys.modules)
        rvc_peft.RVCConfig  # any public name
        installed = "rvc_peft.tuners" in sys.modules  # importing it is what registers the tuner
        from rvc_peft.tuners import is_registered
        print(before, installed, is_registered())
    """)
    assert out == "[] True True"


def test_any_rvc_model_installs_the_tuner_however_imported(tmp_path):
    """The RVC LoRA layers come with the models: a base built without `rvc_peft.<name>` or `load_synthesizer`
    (here RVCSynthesizer from its config) still gets them under stock PEFT calls."""
    out = _python("""
        import sys
        from rvc_peft.models import RVCConfig, RVCSynthesizer
        model = RVCSynthesizer(RVCConfig.from_preset("40k", "v2", True))
        from peft import LoraConfig, get_peft_model
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["dec.ups.0"]))
        from rvc_peft.tuners import is_registered
        print("rvc_peft.tuners" in sys.modules, is_registered(), type(peft_model.base_model.model.dec.ups[0]).__name__)
    """)
    assert out == "True True LoraConvTranspose1d"  # stock PEFT has no ConvTranspose1d layer
