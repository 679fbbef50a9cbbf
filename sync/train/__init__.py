"""Train a detector on the store's labels and record what it was trained on.

``autolabel train`` (`sync.commands.train`) over:

- `sync.train.plan`: which labels (``human``, ``prelabel:RUN``, ``mixed``) at which threshold,
  the dataset's fixed split, the YOLO export and the checks that run before any training;
- `sync.train.ultra`: ultralytics (base models, training, resume, metrics);
- `sync.train.run`: a training run end to end, recorded in the store (`sync.store.training`).

The trained weights are a detector like any other: ``yolo:PATH``
(`serverless.models.yolo`). Importing this package imports neither torch nor ultralytics.
"""

from sync.train.plan import LabelSource, TrainingError, TrainingPlan, prepare_training
from sync.train.run import TrainOptions, TrainingResult, resume_training, train_detector

__all__ = [
    "LabelSource",
    "TrainOptions",
    "TrainingError",
    "TrainingPlan",
    "TrainingResult",
    "prepare_training",
    "resume_training",
    "train_detector",
]
