"""Models: pre-activation CIFAR ResNets and their noisy ensembles (EnResNet)."""
from .enresnet import BlockNoise, Ensemble, enresnet, has_noise, model_name, noise_state, set_noise
from .resnet import PreActBlock, PreActResNet

__all__ = ["BlockNoise", "Ensemble", "PreActBlock", "PreActResNet", "enresnet", "has_noise",
           "model_name", "noise_state", "set_noise"]
