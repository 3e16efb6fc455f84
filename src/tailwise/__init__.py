"""tailwise: training classifiers on imperfect data.

Long-tailed classes, noisy labels, ambiguous inputs, miscalibrated confidence and adversarial
perturbations, with every method checked against its official implementation.

The core needs only torch and numpy::

    from tailwise.losses import LDAMLoss
    from tailwise.functional import ldam_loss
"""

from tailwise._validation import set_validation, validation_disabled, validation_enabled
from tailwise.class_counts import (
    class_counts_from_labels,
    class_priors,
    effective_number_weights,
    inverse_frequency_weights,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "class_counts_from_labels",
    "class_priors",
    "effective_number_weights",
    "inverse_frequency_weights",
    "set_validation",
    "validation_disabled",
    "validation_enabled",
]
