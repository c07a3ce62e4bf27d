"""autotx_lib: move microscopy data off instrument PCs, verified; then look at what arrived."""

__version__ = "0.1.0"
