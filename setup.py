"""octvideo: video action recognition with 3D Octave Convolution."""
from setuptools import find_packages, setup

setup(
    name="octvideo",
    version="0.1.0",
    description="Oct-C2D / Oct-I3D ResNet-50 video models with spatial 3D Octave Convolution",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    python_requires=">=3.9",
    install_requires=[
        # No exact pins: users bring the torch build that matches their CUDA.
        "torch>=2.0",
        "torchvision>=0.15",
        "pytorchvideo>=0.1.5",
        # decord only publishes x86-64 Linux wheels; elsewhere PyAV is the decoder.
        "decord>=0.6; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "av>=10",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "numpy",
        "pyyaml",
    ],
    extras_require={
        "test": ["pytest>=7", "scikit-video"],
    },
)
