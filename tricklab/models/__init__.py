"""Built-in architectures (``mlp``, ``cnn``, ``cnn_flatten``, ``resnet``, ``inception``) and user models
("pkg.module:factory")."""

from tricklab.models.blocks import HiddenLayer
from tricklab.models.cnn import CNN, FlattenCNN
from tricklab.models.inception import Inception, InceptionModule
from tricklab.models.mlp import MLP
from tricklab.models.registry import MODELS, build_model
from tricklab.models.resnet import PreActBlock, ResNet
from tricklab.models.user import load_user_model

__all__ = [
    "CNN",
    "FlattenCNN",
    "MLP",
    "MODELS",
    "HiddenLayer",
    "Inception",
    "InceptionModule",
    "PreActBlock",
    "ResNet",
    "build_model",
    "load_user_model",
]
