"""rvc-peft: Hugging Face PEFT, Accelerate and Hub support for RVC voice models."""

__version__ = "0.1.0"
