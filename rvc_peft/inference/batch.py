"""Files and folders in, files out: what `rvc-peft convert` and `rvc-peft eval` do, as library functions.

* `collect_inputs` finds audio files (recursively in folders, by extension) and remembers where each sits relative
  to the folder it was found in, so outputs mirror the input tree;
* `plan_outputs` picks output paths that never replace an input (and, unless asked, never an existing file);
* `convert_files` converts them one by one with a progress bar; a file that fails is reported and skipped. Each
  output name is claimed again when its file is complete: a file that appeared there meanwhile (another run
  writing the same `-o`) is never replaced (unless `overwrite`), the next free name is used, and the report holds
  the paths actually written;
* `evaluate_paths` compares two files, or two folders file by file (matched by relative path and stem).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..features.audio import AUDIO_EXTENSIONS

OUTPUT_FORMATS = {"wav": ".wav", "flac": ".flac"}


@dataclass
class InputFile:
    path: Path  # the audio file
    relative: Path  # where it sits below the folder it was found in (just its name for files given directly)


@dataclass
class ConvertReport:
    """What `convert_files` did: (input, output) pairs written, (input, error message) pairs that failed."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(paths: Sequence[str | os.PathLike], exclude: Path | None = None) -> list[InputFile]:
    """Audio files named in `paths` (files as given; folders searched recursively by extension, sorted).

    `exclude` is the output folder: when it lies inside an input folder, the files under it are skipped so a re-run
    does not convert its own outputs; an input folder that *is* the output folder raises `ValueError` (outputs would
    mix with the recordings and become inputs of the next run). Files named directly are always taken, and a file
    listed twice (or reached through two folders) once. A path that does not exist raises `FileNotFoundError`.
    """
    found: list[InputFile] = []
    seen: set[Path] = set()
    exclude = exclude.resolve() if exclude is not None else None
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        skip_under = None
        if path.is_dir():
            folder = path.resolve()
            if exclude is not None and exclude == folder:
                raise ValueError(f"{path}: the output folder is the input folder; pick another -o (outputs are "
                                 "written to a separate folder so that they never mix with, or replace, the inputs)")
            if exclude is not None and folder in exclude.parents:
                skip_under = exclude
            candidates = [(p, p.relative_to(path)) for p in sorted(path.rglob("*"))
                          if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")]
        else:
            candidates = [(path, Path(path.name))]
        for file, relative in candidates:
            resolved = file.resolve()
            if resolved in seen or (skip_under is not None and skip_under in resolved.parents):
                continue
            seen.add(resolved)
            found.append(InputFile(file, relative))
    return found


def plan_outputs(inputs: Sequence[InputFile], out: str | os.PathLike, *, fmt: str = "wav",
                 overwrite: bool = False, suffix: str = "") -> list[Path]:
    """An output path per input: `out/<relative dir>/<stem><suffix>.<fmt>`, or `out` itself for one input when
    `out` ends with an audio extension.

    Never an input file: such a name (and, without `overwrite`, an existing file or a name already planned) gets
    " (1)", " (2)", ... appended to the stem. An `out` that is an existing folder is always a folder. These are
    plans: `convert_files` claims each name again when it writes (another process may take one meanwhile).
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    input_paths = {item.path.resolve() for item in inputs}
    single_file = len(inputs) == 1 and out.suffix.lower() in AUDIO_EXTENSIONS and not out.is_dir()
    taken: set[Path] = set()
    planned = []
    for item in inputs:
        if single_file:
            target = out
        else:
            relative = item.relative.with_name(item.relative.stem + suffix + OUTPUT_FORMATS[fmt])
            target = out / relative
        candidate, n = target, 0
        while (candidate.resolve() in input_paths or candidate.resolve() in taken
               or (not overwrite and candidate.exists())):
            n += 1
            candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        taken.add(candidate.resolve())
        planned.append(candidate)
    return planned


def convert_files(
    convert: Callable[[Path], tuple[Any, int]],
    inputs: Sequence[InputFile],
    outputs: Sequence[Path],
    *,
    subtype: str = "PCM_16",
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> ConvertReport:
    """Run `convert(path) -> (audio, sample_rate)` on every input and write each result atomically.

    `outputs` are the planned names (`plan_outputs`). Without `overwrite` a name is claimed only when its file is
    complete and only if it is still free; otherwise the file goes to the next free "stem (n).ext" that is neither an
    input nor another planned output, so two runs writing the same folder both keep their results. With
    `overwrite` the planned file is replaced atomically. `report.written` holds the paths actually written. A
    file whose conversion or writing raises `ValueError`/`OSError`/`RuntimeError` (a full disk included) is logged
    with its name and the reason, and the others continue.
    """
    from tqdm.auto import tqdm

    from .audio_io import write_audio

    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} output paths")
    report = ConvertReport()
    # names this run must not take for another file: its inputs and the other planned outputs
    reserved = {os.path.realpath(item.path) for item in inputs} | {os.path.realpath(target) for target in outputs}
    bar = tqdm(list(zip(inputs, outputs)), desc="converting", unit="file", disable=not progress)
    for item, target in bar:
        bar.set_postfix_str(item.path.name[-40:], refresh=False)
        try:
            audio, rate = convert(item.path)
            written = write_audio(target, audio, rate, subtype=subtype, overwrite=overwrite,
                                  avoid=reserved - {os.path.realpath(target)})
        except (ValueError, OSError, RuntimeError) as err:
            reason = str(err) if str(item.path) in str(err) else f"{item.path}: {err}"
            report.failed.append((item.path, reason))
            (bar.write if progress else log)(f"skipped {reason}")
            continue
        reserved.add(os.path.realpath(written))
        report.written.append((item.path, written))
    bar.close()
    return report


def _stem_key(relative: Path) -> str:
    return str(relative.with_suffix("")).lower()


def evaluate_paths(
    converted: str | os.PathLike,
    reference: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """`evaluate` for two files, or for two folders (files paired by relative path without extension, plus a mean).

    For folders, `figure` is a folder receiving one PNG per pair. `json_path` gets the result (atomically).
    Unpaired files and pairs that fail are listed, not fatal.
    """
    from .evaluation import EvaluationError, evaluate

    converted, reference = Path(converted), Path(reference)
    if converted.is_dir() != reference.is_dir():
        raise EvaluationError(f"{converted} and {reference}: compare two files or two folders, not one of each")
    if not converted.is_dir():
        result = evaluate(converted, reference, figure=figure, **kwargs)
    else:
        conv = {_stem_key(i.relative): i for i in collect_inputs([converted])}
        ref = {_stem_key(i.relative): i for i in collect_inputs([reference])}
        keys = sorted(set(conv) & set(ref))
        if not keys:
            raise EvaluationError(f"{converted} and {reference}: no files with matching names to compare")
        from tqdm.auto import tqdm

        pairs, failed = [], []
        for key in tqdm(keys, desc="evaluating", unit="pair", disable=not progress):
            target = Path(figure) / (key + ".png") if figure is not None else None
            try:
                pairs.append(evaluate(conv[key].path, ref[key].path, figure=target, **kwargs))
            except (ValueError, OSError) as err:
                failed.append({"converted": str(conv[key].path), "reference": str(ref[key].path), "error": str(err)})
        metric_names = ("mcd_db", "f0_rmse_cents", "f0_corr", "vuv_error_rate", "spectral_convergence")
        mean = {}
        for name in metric_names:
            values = [p[name] for p in pairs if p.get(name) is not None]
            mean[name] = sum(values) / len(values) if values else None
        result = {
            "converted": str(converted), "reference": str(reference), "mean": mean, "pairs": pairs, "failed": failed,
            "unpaired_converted": sorted(str(conv[k].path) for k in set(conv) - set(ref)),
            "unpaired_reference": sorted(str(ref[k].path) for k in set(ref) - set(conv)),
        }
    if json_path is not None:
        from ..utils.files import atomic_write

        text = json.dumps(result, indent=2) + "\n"
        atomic_write(Path(json_path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return result
