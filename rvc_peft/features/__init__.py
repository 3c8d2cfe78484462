"""rvc_peft.features."""
