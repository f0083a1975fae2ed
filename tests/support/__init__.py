"""Test support code: the SmolLM2 stand-in model builder and a real vLLM server launcher.

Nothing here is part of the ``tarsguard`` package. The stand-in model is a tiny,
non-safety-trained chat model used only to exercise real code paths (HTTP, streaming,
usage accounting, errors); its outputs say nothing about safety.
"""
