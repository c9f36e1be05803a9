"""Files and weights: everything that turns bytes on disk (or a model name) into named arrays.

    safetensors.py   read (memory-mapped) and write .safetensors files, header checked
    checkpoints.py   a model folder's tensors, checked by name, shape and dtype against a config
    packed.py        the storage formats of fewer bytes per weight (bfloat16, float16, int8)
    hub.py           model names -> local folders: the cache layout, the bundled model, which files to fetch
    download.py      one file over HTTP: resume, checksums, retries, locks, limits, the token's host
    tf_checkpoint.py OpenAI's TF1 checkpoint, read without TensorFlow
    openai_release.py  OpenAI's original release: download (through download.py), convert

Nothing here imports NumPy at package import time, nor Numba ever.
"""
