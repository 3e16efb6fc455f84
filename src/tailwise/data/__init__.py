"""tailwise.data: dataset sources, long-tail subsampling, label noise, validation splits.

Importing this package registers the built-in sources in :data:`DATASETS` (``mnist``,
``fashion-mnist``, ``cifar10``, ``cifar10-exact-subset``, ``cifar10n``, ``mnist1d``, ``npz``,
``cifar-python``, ``idx``, ``image-folder``). :func:`prepare_data` is the trainer's entry point.
"""

from tailwise.data.arrays import ArrayDataset
from tailwise.data.long_tail import LT_CONVENTIONS, LT_PROFILES, long_tail_counts, long_tail_subsample
from tailwise.data.noise import CIFAR100_COARSE, NOISE_KINDS, NoisyLabels, apply_noise, transition_matrix
from tailwise.data.prepare import LONG_TAIL_KEYS, NOISE_KEYS, DataBundle, prepare_data
from tailwise.data.readers import (
    IMAGE_EXTENSIONS,
    load_cifar_python,
    load_idx,
    load_image_folder,
    load_npz,
    read_cifar_pickle,
    read_idx,
    safe_unpickle,
)
from tailwise.data.registry import (
    DATASETS,
    SourceSplits,
    default_data_dir,
    default_data_dir_candidates,
    load_source,
)
from tailwise.data.sources import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10N_LABEL_SETS,
    cache_dir,
    decode_jpeg_array,
    load_cifar10,
    load_cifar10_exact_subset,
    load_cifar10n,
    load_fashion_mnist,
    load_mnist,
    load_mnist1d,
)
from tailwise.data.splits import per_class_tail_split, train_val_split

__all__ = [
    "CIFAR10N_LABEL_SETS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_COARSE",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "LONG_TAIL_KEYS",
    "LT_CONVENTIONS",
    "LT_PROFILES",
    "NOISE_KEYS",
    "NOISE_KINDS",
    "ArrayDataset",
    "DataBundle",
    "NoisyLabels",
    "SourceSplits",
    "apply_noise",
    "cache_dir",
    "decode_jpeg_array",
    "default_data_dir",
    "default_data_dir_candidates",
    "load_cifar10",
    "load_cifar10_exact_subset",
    "load_cifar10n",
    "load_cifar_python",
    "load_fashion_mnist",
    "load_idx",
    "load_image_folder",
    "load_mnist",
    "load_mnist1d",
    "load_npz",
    "load_source",
    "long_tail_counts",
    "long_tail_subsample",
    "per_class_tail_split",
    "prepare_data",
    "read_cifar_pickle",
    "read_idx",
    "safe_unpickle",
    "train_val_split",
    "transition_matrix",
]
