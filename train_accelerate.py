#!/usr/bin/env python
"""Train an RVC voice LoRA adapter: `accelerate launch train_accelerate.py --pretrained_model_name_or_path ...`.

Kept for runs from a checkout's root; from any other folder use `accelerate launch -m rvc_peft.train ...`,
`python -m rvc_peft.train ...` or `rvc-peft-train ...` (the same options and exit codes; `--help` lists them).
"""

import sys

from rvc_peft.train import run

if __name__ == "__main__":
    sys.exit(run())
