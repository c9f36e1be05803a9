"""Files and weights: everything that turns bytes on disk (or a model name) into named arrays.

    safetensors.py   read (memory-mapped) and write .safetensors files, header checked
    checkpoints.py   a model folder's tensors, checked by name, shape and dtype against a config
    packed.py        the storage formats of fewer bytes per weight (bfloat16, float16, int8)
    hub.py           model names -> local folders: the cache, the bundled model, downloads

Nothing here imports NumPy at package import time, nor Numba ever.
"""
