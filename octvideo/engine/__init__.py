"""Training and evaluation engine: config -> data -> model -> loop."""
from .evaluator import run_test, summarise, video_scores
from .trainer import NonFiniteLossError, train, train_one_epoch, validate

__all__ = ["train", "train_one_epoch", "validate", "run_test", "summarise", "video_scores", "NonFiniteLossError"]
