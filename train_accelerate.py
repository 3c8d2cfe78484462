#!/usr/bin/env python
"""Train an RVC voice LoRA adapter: `accelerate launch train_accelerate.py --pretrained_model_name_or_path ... `.

Also runs with plain `python train_accelerate.py ...` (one process). Every option: `--help`; the work is done by
`rvc_peft.training.main`.
"""

import sys

from rvc_peft.training import TrainingError, main, parse_args

if __name__ == "__main__":
    try:
        result = main(parse_args())
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(130 if result.interrupted else 0)
