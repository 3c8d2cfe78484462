#!/usr/bin/env bash
# Creates .venv with rvc-peft and everything its demo and tests need, on a CPU machine.
#   bash scripts/setup.sh          library + pitch extractors + faiss + quality metrics + the voice lab's voices
#   bash scripts/setup.sh --test   the same plus the test tools and reference implementations
# Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
# torch first and pinned: anything resolving a bare "torch" would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0" "setuptools<82" wheel
# `app`: the web app (Gradio) and Playwright for its browser tests (they drive the system's chromium, see below).
# `lab`: the voice lab's Piper voice (piper-tts needs only onnxruntime: no torch, so no CUDA build is pulled).
"${PIP[@]}" -e ".[all,dev,lab,app]"
# --- quality metrics for `rvc-peft eval` (SECS with Resemblyzer, DNSMOS with speechmos) -------------------------
# The `quality` extra (part of `all` above) brings webrtcvad-wheels, speechmos, onnxruntime and requests.
# resemblyzer goes in with --no-deps: it declares `webrtcvad` (sdist-only, needs a compiler; webrtcvad-wheels
# provides that module) and the obsolete `typing` backport; its real dependencies (torch, librosa, scipy) are above.
"${PIP[@]}" --no-deps resemblyzer==0.1.4
.venv/bin/python -W ignore -c "import resemblyzer, speechmos.dnsmos" 2>/dev/null \
  || echo "warning: resemblyzer/speechmos do not import; rvc-peft eval will skip SECS and DNSMOS" >&2
# --- end of quality metrics --------------------------------------------------------------------------------------
if [ "$want_tests" = 1 ]; then
  # Reference implementations the tests compare against (never imported by rvc_peft itself):
  # RVC's own model code (the `rvc` wheel, without its fairseq-bound dependencies) and fairseq.
  "${PIP[@]}" --no-deps rvc==0.3.5
  "${PIP[@]}" ve-fairseq==0.12.3
fi
# torchcrepe drags in torchaudio, whose PyPI wheels are CUDA builds that fail to import on a CPU
# machine and break `import transformers`. Its pure-Python part works: drop the CUDA libraries.
rm -f .venv/lib/python3*/site-packages/torchaudio/lib/*.so
.venv/bin/python -c "import torch, transformers, peft; assert torch.version.cuda is None, 'a CUDA torch was installed'"

# Command-line speech synthesizers and ffmpeg for the speech tests and the demo (Debian/Ubuntu, as root).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v flite >/dev/null || missing+=(flite)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  # the browser of the web app's browser tests (tests/app), driven headless by Playwright
  command -v chromium >/dev/null || missing+=(chromium)
  # festival and the three voices of the voice lab's corpus (rvc_peft.lab.corpus)
  command -v text2wave >/dev/null || missing+=(festival)
  for pkg in festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null \
      || echo "warning: could not apt-get install ${missing[*]}; speech-based tests will be skipped" >&2
  fi
fi
if [ "$want_tests" = 1 ] && ! { command -v espeak-ng && command -v flite && command -v text2wave; } >/dev/null; then
  # the speech tests and the demo's test would be skipped: fine on a developer machine, not in CI, where they must run
  if [ -n "${CI:-}" ]; then
    echo "error: espeak-ng, flite or festival is missing, so the speech tests cannot run (install espeak-ng, flite," \
         "ffmpeg, festival, festvox-kallpc16k, festvox-kdlpc16k and festvox-us-slt-hts)" >&2
    exit 1
  fi
  echo "warning: espeak-ng, flite or festival is missing; speech tests will be skipped (apt-get install espeak-ng" \
       "flite ffmpeg festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)" >&2
fi
if [ "$want_tests" = 1 ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  # the web app's browser tests would be skipped: fine on a developer machine, not in CI
  if [ -n "${CI:-}" ]; then
    echo "error: chromium is missing, so the web app's browser tests cannot run (apt-get install chromium)" >&2
    exit 1
  fi
  echo "warning: chromium is missing; the web app's browser tests will be skipped (apt-get install chromium)" >&2
fi
echo "rvc-peft environment ready in .venv"
