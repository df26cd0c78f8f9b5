"""The models room: image classifiers used by the papers, CIFAR-style (32x32 input, no stem down-sampling).

Every model maps float images ``[B, C, H, W]`` to logits ``[B, K]`` and ends in a global average pool,
so any input size that survives the down-sampling works (32x32 CIFAR, 64x64 Tiny-ImageNet).

- `registry`: `MODELS` (name -> builder), `build_model`, `check_model_args`, `init_weights`,
  `count_parameters`.
- `resnet`: ``resnet18`` / ``resnet34`` (papers A and B) and ``resnet20`` / ``resnet32`` / ``resnet56``
  (He et al. 2016 §4.2, option A shortcuts).
- `wide_resnet`: ``wrn`` (WideResNet-depth-widen_factor) and ``wrn28_1`` (paper A's WRN).
- `densenet`: ``densenet_bc`` (DenseNet-BC, Huang et al. 2017).
- `small`: ``small_cnn``, four conv layers, fast on CPU (tests, quickstart).

The names below are the public API, so ``from simlab.models import build_model, MODELS`` works.
"""

from simlab.models.registry import MODELS, build_model, check_model_args, count_parameters, init_weights

__all__ = ["MODELS", "build_model", "check_model_args", "count_parameters", "init_weights"]
