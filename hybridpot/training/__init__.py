"""Training: datasets, losses, the two-stage 4G schedule, configuration."""

from .builder import build_model
from .config import Config, DataConfig, ModelConfig, OutputConfig, SchedulerConfig, TrainingConfig, load_config
from .dataset import AtomsDataset, Batch, Sample, collate
from .losses import LossWeights, MetricAccumulator, compute_loss
from .preprocessing import fit_descriptor_scaling, fit_energy_offsets, raw_features
from .trainer import Trainer, TrainingInterrupted, evaluate_model

__all__ = [
    "AtomsDataset", "Batch", "Sample", "collate",
    "LossWeights", "MetricAccumulator", "compute_loss",
    "fit_descriptor_scaling", "fit_energy_offsets", "raw_features",
    "Trainer", "TrainingInterrupted", "evaluate_model",
    "Config", "DataConfig", "ModelConfig", "OutputConfig", "SchedulerConfig", "TrainingConfig", "load_config",
    "build_model",
]
