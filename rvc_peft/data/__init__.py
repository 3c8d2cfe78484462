"""rvc_peft.data: RVC's training-data preparation, the rvc-peft dataset format and the retrieval index.

`build_dataset` (folder of recordings -> dataset), `import_rvc_experiment` (RVC/Applio `logs/<exp>/` -> dataset),
`load_rvc_dataset`; `build_index*` / `load_index` (faiss, optional `[index]` extra, imported only when used).
"""

from .cutting import segment_bounds, slice_for_training
from .dataset import DatasetFormatError, DatasetWriter, RVCDatasetInfo, load_rvc_dataset
from .experiment import ExperimentImportError, import_rvc_experiment
from .index import (
    FaissMissingError,
    IndexFileError,
    RetrievalIndex,
    build_index,
    build_index_from_dataset,
    load_index,
    save_index,
)
from .preprocess import build_dataset, speaker_for
from .slicer import Slicer
from .work_cache import DatasetBuildError

__all__ = [
    "DatasetBuildError",
    "DatasetFormatError",
    "DatasetWriter",
    "ExperimentImportError",
    "FaissMissingError",
    "IndexFileError",
    "RVCDatasetInfo",
    "RetrievalIndex",
    "Slicer",
    "build_dataset",
    "build_index",
    "build_index_from_dataset",
    "import_rvc_experiment",
    "load_index",
    "load_rvc_dataset",
    "save_index",
    "segment_bounds",
    "slice_for_training",
    "speaker_for",
]
