"""erasectl: erase a concept from a text-to-image diffusion model and measure what changed.

Importing the package is cheap; torch, diffusers and transformers load only when a command or a
function that needs them runs.
"""

__version__ = "0.3.0"
