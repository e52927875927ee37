"""Models: architecture tables (arch.py) driving one ResNet builder (resnet.py)."""
from .arch import ARCHS, ArchSpec, display_name, get_arch
from .build import CUDA_GRAPH_MODES, build_model, compile_for_inference, model_memory_format, to_model_memory_format
from .fuse import fuse_conv_bn
from .nonlocal_block import NonLocal3d, OctNonLocal3d
from .resnet import ResNet

__all__ = ["ARCHS", "CUDA_GRAPH_MODES", "ArchSpec", "ResNet", "build_model", "compile_for_inference", "display_name", "fuse_conv_bn", "get_arch", "model_memory_format", "NonLocal3d", "OctNonLocal3d", "to_model_memory_format"]
