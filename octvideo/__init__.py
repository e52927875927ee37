"""octvideo: video action recognition with spatial 3D Octave Convolution."""
__version__ = "0.1.0"
