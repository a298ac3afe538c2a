"""privkd: privileged knowledge distillation from multimodal teachers to prevalent-modality students."""

__version__ = "0.1.0"
