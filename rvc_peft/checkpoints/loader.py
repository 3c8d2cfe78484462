"""`load_synthesizer` / `load_discriminator`: one entry point for every RVC file and our Hub layout."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..models import MultiPeriodDiscriminator, RVCSynthesizer
from ..models.weight_norm import to_legacy_keys, to_parametrized_keys
from .formats import RVCCheckpoint, discriminator_version, normalize_state_dict, parse_checkpoint
from .safe_load import CheckpointError, check_weights, read_pth, read_safetensors

# Our Hugging Face layout, exactly what `save_pretrained` writes: a Hub snapshot downloads these and nothing else
# (adapters, indexes or READMEs that share the repo are not needed to load the base).
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"


def resolve_model_file(
    path_or_hub_id: str | os.PathLike, *, filename: str | None = None, revision: str | None = None
) -> Path:
    """A local path for a file, a folder, or a Hub reference (`rvc_peft.utils.hub.resolve`, whose docstring has the
    exact rule for which is which).

    Hub references: `repo_id` + `filename=`, `"org/repo/sub/file.pth"`, or `"hf://org/repo[@rev]/sub/file.pth"`.
    A bare `"org/repo"` resolves to a snapshot folder (our `config.json` + `model.safetensors` layout).
    A string that can only be a local path (absolute, `./`, `~`, a Windows path, a single name, no valid repo id, a
    file name as repo name, or one whose first folder exists here) that does not exist fails at once with "file not
    found", without asking the Hub; offline, a Hub reference not in the cache fails at once too.
    """
    from ..utils.hub import HubError, LocalPathNotFoundError, resolve

    try:
        return resolve(path_or_hub_id, filename=filename, revision=revision, allow_patterns=[HF_CONFIG, HF_WEIGHTS],
                       offline_note="; pass a local .pth file or model folder instead")
    except LocalPathNotFoundError as err:
        raise CheckpointError(err.path, f"file not found{err.hint}") from None
    except HubError as err:
        raise CheckpointError(err.reference, f"not a local file and not downloadable from the Hugging Face Hub "
                                             f"({err.cause}){err.note}") from None


def read_checkpoint(
    path: str | os.PathLike, *, sample_rate: int | str | None = None, version: str | None = None
) -> RVCCheckpoint:
    """Read and recognise an RVC `.pth` synthesizer file (see `formats.parse_checkpoint`).

    The weights are checked (`check_weights`: no NaN/inf, no absurd magnitudes, floating dtypes) so a damaged file is
    an error naming it instead of a voice that converts to silence or noise.
    """
    checkpoint = parse_checkpoint(read_pth(path), path, sample_rate=sample_rate, version=version)
    check_weights(checkpoint.state_dict, path)
    return checkpoint


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load a legacy-spelled state dict with exact key and shape checks, casting dtypes (fp16 files -> fp32)."""
    expected = to_legacy_keys(model.state_dict())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
        raise CheckpointError(path, "weights do not fit the model: " + "; ".join(parts))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                path, f"{key} has shape {list(tensor.shape)} in the file but {list(expected[key].shape)} in the model"
            )
    model.load_state_dict(to_parametrized_keys(state), strict=True)


def load_synthesizer(
    path_or_hub_id: str | os.PathLike,
    *,
    sample_rate: int | str | None = None,
    version: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    keep_posterior_encoder: bool = True,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> RVCSynthesizer:
    """Load any RVC synthesizer as an `RVCSynthesizer` in eval mode.

    Accepts pretrained bases (`f0G40k.pth`), training checkpoints (`G_2333333.pth`), exported voices
    (`weights/name.pth`), Applio exports, and our Hugging Face layout (a folder or hub id with `config.json` +
    `model.safetensors`). Bases and checkpoints carry no config: it is inferred from tensor shapes, and
    `sample_rate=` settles the cases shapes cannot tell apart. `keep_posterior_encoder=False` drops `enc_q`
    (not needed for conversion).
    """
    source = resolve_model_file(path_or_hub_id, filename=filename, revision=revision)
    # A loaded base is what PEFT gets next: install the RVC LoRA tuner (once) however this function was imported;
    # `import rvc_peft` is lazy and no longer does it by itself.
    from .. import tuners  # noqa: F401
    if source.is_dir():
        model = _load_hf_folder(source, str(path_or_hub_id))
    else:
        checkpoint = read_checkpoint(source, sample_rate=sample_rate, version=version)
        state = checkpoint.state_dict
        config = checkpoint.config
        if not keep_posterior_encoder and config.use_posterior_encoder:
            config.use_posterior_encoder = False
            state = {k: v for k, v in state.items() if not k.startswith("enc_q.")}
        model = RVCSynthesizer(config)
        load_state_into(model, state, source)
        model.config.rvc_file_kind = checkpoint.kind
        if isinstance(checkpoint.metadata.get("info"), str):
            model.config.rvc_info = checkpoint.metadata["info"]  # export_rvc writes it back unless told otherwise
    if not keep_posterior_encoder:
        model.remove_posterior_encoder()
    _check_request(model, sample_rate, version, source)
    name = str(path_or_hub_id) if filename is None else f"{path_or_hub_id}/{filename}"
    model.config._name_or_path = name
    model.name_or_path = name
    return model.to(device=device, dtype=dtype).eval()


def _load_hf_folder(folder: Path, name: str) -> RVCSynthesizer:
    if not (folder / HF_CONFIG).is_file() or not (folder / HF_WEIGHTS).is_file():
        raise CheckpointError(folder, f"a model folder needs {HF_CONFIG} and {HF_WEIGHTS} (rvc-peft's layout)")
    weights = folder / HF_WEIGHTS
    # Read and checked before transformers gets to it: a damaged file is reported as itself, and NaN/inf or integer
    # tensors (which transformers would load or cast without a word) are refused. A synthesizer is tens of MB, so
    # reading it twice costs little.
    check_weights(read_safetensors(weights), weights)
    try:
        # Mismatched shapes are collected (not raised as transformers' RuntimeError) so that one error can name
        # every key that does not fit.
        model, info = RVCSynthesizer.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(name, f"cannot load the Hugging Face model folder ({_first_line(err)})") from None
    problems = []
    for label, keys in (("missing", info["missing_keys"]), ("unexpected", info["unexpected_keys"])):
        if keys:
            problems.append(f"{len(keys)} {label} keys ({', '.join(sorted(keys)[:5])})")
    if info["mismatched_keys"]:
        shown = ", ".join(f"{key} {list(got)} in the file, {list(want)} in the model"
                          for key, got, want in sorted(info["mismatched_keys"])[:5])
        problems.append(f"{len(info['mismatched_keys'])} keys of the wrong shape ({shown})")
    if problems:
        # transformers would leave missing tensors at their random initial values: never a usable voice.
        raise CheckpointError(name, f"{HF_WEIGHTS} does not fit {HF_CONFIG}: " + "; ".join(problems))
    return model


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _check_request(model: RVCSynthesizer, sample_rate: int | str | None, version: str | None, path: Path) -> None:
    from ..models.config import parse_sample_rate

    if sample_rate is not None and parse_sample_rate(sample_rate) != model.config.sampling_rate:
        raise CheckpointError(path, f"sample_rate={sample_rate} was requested but this is a "
                                    f"{model.config.sample_rate_name} model")
    if version is not None and version != model.config.version:
        raise CheckpointError(path, f"version={version} was requested but this is a {model.config.version} model")


def load_discriminator(
    path_or_hub_id: str | os.PathLike, *, version: str | None = None, filename: str | None = None,
    revision: str | None = None, device: str | torch.device = "cpu",
) -> MultiPeriodDiscriminator:
    """Load RVC's pretrained or training discriminator (`f0D40k.pth`, `D_*.pth`) in eval mode."""
    source = resolve_model_file(path_or_hub_id, filename=filename, revision=revision)
    obj = read_pth(source)
    state = obj.get("model") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and "weight" in obj and "config" in obj:
        raise CheckpointError(source, "this is an exported voice (a synthesizer), not a discriminator (D) file")
    if not isinstance(state, dict):
        raise CheckpointError(source, "unknown format: an RVC discriminator file holds {'model': state_dict}")
    state = normalize_state_dict(state, source)
    if "enc_p.emb_phone.weight" in state:
        raise CheckpointError(source, "this is a synthesizer (G) checkpoint, not a discriminator (D); use load_synthesizer")
    check_weights(state, source)
    file_version = discriminator_version(state, source)
    if version is not None and version != file_version:
        raise CheckpointError(source, f"version={version} was requested but this is a {file_version} discriminator")
    model = MultiPeriodDiscriminator(file_version)
    load_state_into(model, state, source)
    return model.to(device).eval()
