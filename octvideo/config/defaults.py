"""Every config key of octvideo, with its default and what it means.

This is the one place where keys are declared (PySlowFast's ``defaults.py`` habit).
YAML files under ``configs/`` override these values and may inherit from each other
with ``_BASE_``; command-line ``KEY VALUE`` pairs override the YAML. A key that is not
declared here is an error (see :func:`octvideo.config.get_cfg`).
"""
from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CfgNode()
# Architecture table row (octvideo/models/arch.py): "resnet" (2D ImageNet ResNet),
# "c2d", "i3d", "c2d_nl", "i3d_nl" (3D video models). The Oct version of each is
# the same row with OCT.ALPHA > 0.
_C.MODEL.ARCH = "i3d"
# Network depth: 50 (the published models), or 26 / 101 (same tables, other depths).
_C.MODEL.DEPTH = 50
# Output channels of the stem; every stage width scales with it (64 = ResNet-50).
# Reduced widths are for tests and the CPU demo.
_C.MODEL.WIDTH = 64
# Number of classes of the classifier (400 Kinetics-400, 600 Kinetics-600, 1000 ImageNet).
_C.MODEL.NUM_CLASSES = 400
# Dropout probability before the final linear layer.
_C.MODEL.DROPOUT_RATE = 0.5
# Compile the model with torch.compile (PyTorch 2.x); off by default. Training compiles the
# training model; the multi-view test and tools/predict.py compile their (BN-folded) model with
# inductor's weight freezing on the CPU (octvideo.models.compile_for_inference; the first chunk
# of views pays the compilation, ~10-40 s per model on 2 cores). Compiled, every OctConv runs
# OctConv3d.forward_traceable: the eager fast form's strategies in plain operators, one graph.
# On this project's CPU, compiled inference was 1.2-1.45x faster than eager, compiled training
# slower than eager (docs/benchmarks.md).
_C.MODEL.COMPILE = False
# torch.compile's mode under MODEL.COMPILE: "default", "reduce-overhead" (inductor plus CUDA
# graphs: the host's per-operator launch cost is paid once at capture, then each call replays;
# on the CPU it is "default"), "max-autotune" (also tries Triton/GEMM kernel variants; long
# compiles) or "max-autotune-no-cudagraphs". On a GPU the octave models are host-bound (two
# branches per layer, about 3x I3D's kernel launches: docs/benchmarks.md, CUDA), which is what
# "reduce-overhead" removes. Compiled inference under a CUDA-graph mode returns a copy of the
# logits (a replay overwrites the graph's output); training marks each step's start
# (torch.compiler.cudagraph_mark_step_begin). Measured on an H200, batch 8 fp32 inference:
# Oct-I3D a=0.5 23.2 ms eager, 10.6 compiled "default", 6.6 "reduce-overhead" (I3D: 9.0 eager,
# 5.5 "reduce-overhead"); docs/benchmarks.md, CUDA. Under DDP, inductor captures the graph
# pieces between the gradient buckets; that combination has not been run here.
_C.MODEL.COMPILE_MODE = "default"
# The modes torch.compile takes, in the order the docs list them.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Run the model and its inputs in channels_last (2D) / channels_last_3d (3D) memory: training,
# validation, the multi-view test and tools/predict.py. On the CPU this is what the fast paths
# are built for (oneDNN kernels on channels-last memory, pre-packed weights at inference): on
# 2 cores, contiguous tensors made Oct-I3D a=0.5 inference 1.4x and its training step 1.36x
# slower, and I3D's 1.17-1.19x (docs/benchmarks.md). The weights' layout does not change the
# numbers, and checkpoints load into either. On an H200 neither layout was consistently faster at
# batch 1-8: the models are host-bound there (docs/benchmarks.md, CUDA; `tools/benchmark.py
# --device cuda` times both layouts). False keeps contiguous tensors.
_C.MODEL.CHANNELS_LAST = True

# ---------------------------------------------------------------------------- #
# Octave convolution
# ---------------------------------------------------------------------------- #
_C.OCT = CfgNode()
# Ratio of channels in the low-frequency (half spatial resolution) branch in res2-res4.
# 0 builds the vanilla network. The paper's video models use 0.1, Oct-ResNet-50 0.5.
_C.OCT.ALPHA = 0.0
# Round each octave layer's low-frequency channel count to a multiple of this (nearest, at least
# one multiple): 1 keeps the official split low = int(ALPHA * C), which published and inflated
# checkpoints use. 8 or 16 gives both branches widths that vector units and tensor cores take
# whole; at ALPHA 0.1 the official split's 6, 12, 25, 51 low channels (res2-res4) become 8, 16,
# 24, 48 with 8. Measured (docs/benchmarks.md, "Aligned octave split"; medians of three runs):
# Oct-I3D a=0.1 on 2 CPU threads, training step 1.18 -> 1.08 of I3D with 8 (0.99 with 16, which
# also has 5% fewer FLOPs), inference 1.04 -> 1.02 (0.98); on an H200 under MODEL.COMPILE_MODE
# reduce-overhead at batch 8, 1.72 -> 1.47 of I3D with 8, and in an eager fp32 training step at
# batch 32, 2.22 -> 1.47 (on unaligned widths cuDNN picks a scalar channels-last BatchNorm kernel).
# Checkpoints of one split do not load into the other (a shape error names the tensor).
_C.OCT.CHANNEL_MULTIPLE = 1

# ---------------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------------- #
_C.DATA = CfgNode()
# Dataset name: "kinetics" (Kinetics-400/600 layout) or "imagenet" (not shipped yet).
_C.DATA.DATASET = "kinetics"
# Folder holding the annotation files ({train,val,test}.csv or the official
# {train,validate,test}.csv with a header).
_C.DATA.PATH_TO_DATA_DIR = ""
# Prefix prepended to the video paths found in PySlowFast-style annotation files,
# and the folder searched for videos of the official Kinetics CSVs (defaults to
# PATH_TO_DATA_DIR when empty).
_C.DATA.PATH_PREFIX = ""
# Video decoder: "decord" (x86-64 Linux) or "pyav".
_C.DATA.DECODER = "decord"
# Frames per clip.
_C.DATA.NUM_FRAMES = 8
# Distance between sampled frames, in frames at TARGET_FPS.
_C.DATA.SAMPLING_RATE = 8
# Frame rate the sampling is defined at; videos at other rates are sampled by time.
_C.DATA.TARGET_FPS = 30
# Training: random short-side scale range in pixels [min, max].
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Training / validation crop size in pixels.
_C.DATA.TRAIN_CROP_SIZE = 224
# Test: short side is resized to this size and square crops of this size are taken.
_C.DATA.TEST_CROP_SIZE = 256
# Per-channel mean and std (RGB, pixel values scaled to [0, 1]).
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.STD = [0.225, 0.225, 0.225]
# Input channels of the network.
_C.DATA.INPUT_CHANNEL_NUM = 3
# Training: how many other samples are tried when a video cannot be decoded.
_C.DATA.NUM_RETRIES = 10
# Apply random horizontal flip during training.
_C.DATA.RANDOM_FLIP = True

# ---------------------------------------------------------------------------- #
# Data loader
# ---------------------------------------------------------------------------- #
_C.DATA_LOADER = CfgNode()
# DataLoader worker processes per training process.
_C.DATA_LOADER.NUM_WORKERS = 8
# Pin host memory (useful with CUDA).
_C.DATA_LOADER.PIN_MEMORY = True
# Decoder threads per video (decord / PyAV). 1 inside DataLoader workers: decord's own
# default (one thread per core in every worker) oversubscribes the CPU.
_C.DATA_LOADER.DECODER_THREADS = 1

# ---------------------------------------------------------------------------- #
# Training
# ---------------------------------------------------------------------------- #
_C.TRAIN = CfgNode()
# Run training in tools/train_net.py.
_C.TRAIN.ENABLE = True
# Global mini-batch size (clips), split evenly across processes.
_C.TRAIN.BATCH_SIZE = 64
# Validate every this many epochs (clip-level top-1/top-5).
_C.TRAIN.EVAL_PERIOD = 1
# Save a checkpoint every this many epochs (and always after the last one).
_C.TRAIN.CHECKPOINT_PERIOD = 1
# Resume from OUTPUT_DIR/checkpoints/last_checkpoint when it exists.
_C.TRAIN.AUTO_RESUME = True
# Checkpoint to start from (octvideo file, or a 2D checkpoint with CHECKPOINT_INFLATE).
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Treat CHECKPOINT_FILE_PATH as a 2D ImageNet checkpoint and inflate it.
_C.TRAIN.CHECKPOINT_INFLATE = False
# Inflation of 2D kernels into time: "mean" (I3D: replicate and divide) or "center".
_C.TRAIN.CHECKPOINT_INFLATE_METHOD = "mean"
# Mixed precision: "none", "fp16" (CUDA, with a GradScaler) or "bf16" (CUDA or CPU).
_C.TRAIN.MIXED_PRECISION = "none"

# ---------------------------------------------------------------------------- #
# Testing (multi-view)
# ---------------------------------------------------------------------------- #
_C.TEST = CfgNode()
# Run the multi-view test after training in tools/train_net.py.
_C.TEST.ENABLE = True
# Videos per test batch (all views of a video stay together).
_C.TEST.BATCH_SIZE = 8
# Temporal clips per video, uniformly spaced.
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
# Spatial crops per clip (1: centre; 3: left/centre/right or top/centre/bottom).
_C.TEST.NUM_SPATIAL_CROPS = 3
# Checkpoint evaluated by tools/test_net.py (defaults to the last one in OUTPUT_DIR).
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Views sent through the model at once; 0 = all views of the batch at once. On a CUDA
# out-of-memory error the evaluator halves it and retries (down to 1 view).
_C.TEST.VIEW_BATCH_SIZE = 0
# Test (and tools/predict.py) on an eval-mode copy of the model with every BatchNorm folded
# into the convolution before it (octvideo.models.fuse_conv_bn; mmaction2's --fuse-conv-bn):
# same scores up to float rounding, one memory pass less per convolution.
_C.TEST.FUSE_CONV_BN = True

# ---------------------------------------------------------------------------- #
# Optimiser and schedule
# ---------------------------------------------------------------------------- #
_C.SOLVER = CfgNode()
# Learning rate for the global batch TRAIN.BATCH_SIZE.
_C.SOLVER.BASE_LR = 0.1
# "cosine" or "steps" (multiplied by LRS[i] from epoch STEPS[i]).
_C.SOLVER.LR_POLICY = "cosine"
# Step schedule: epochs at which each factor of LRS starts (first must be 0).
_C.SOLVER.STEPS = [0]
# Step schedule: learning-rate factors relative to BASE_LR.
_C.SOLVER.LRS = [1.0]
# Final learning rate of the cosine schedule, relative to BASE_LR.
_C.SOLVER.COSINE_END_LR = 0.0
# Number of training epochs.
_C.SOLVER.MAX_EPOCH = 196
# SGD momentum and Nesterov.
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = True
# L2 weight decay on convolution and linear weights.
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Weight decay on batch-norm parameters and biases (0: none, the usual choice).
_C.SOLVER.BN_WEIGHT_DECAY = 0.0
# Linear warm-up length in epochs (may be fractional) and its starting learning rate.
_C.SOLVER.WARMUP_EPOCHS = 0.0
_C.SOLVER.WARMUP_START_LR = 0.01

# ---------------------------------------------------------------------------- #
# Misc
# ---------------------------------------------------------------------------- #
# Run folder: config, logs, metrics, checkpoints, plots.
_C.OUTPUT_DIR = "./output"
# Random seed (Python, NumPy, torch).
_C.RNG_SEED = 0
# Log (and update the progress bar postfix) every this many iterations.
_C.LOG_PERIOD = 10
# "cuda" or "cpu"; "auto" picks CUDA when available.
_C.DEVICE = "auto"
# Class names file (JSON list); empty = derived from the training annotations.
_C.CLASSNAMES_FILE = ""


def get_defaults() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
